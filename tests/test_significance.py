import numpy as np
import pytest

from xsam_edge.data.sample import Example, Target
from xsam_edge.metrics.significance import average, bootstrap, compare, paired_bootstrap
from xsam_edge.spec.types import SegmentationRequest, SegmentationResult, Task

HW = (8, 8)
OBJECT = np.zeros(HW, bool)
OBJECT[2:6, 2:6] = True


def referring(image_id: str) -> Example:
    target = Target(masks=OBJECT[None], label_ids=np.zeros(1, np.int64), is_thing=None, answer=None)
    request = SegmentationRequest(np.zeros((*HW, 3), np.uint8), Task.REFERRING, text="the square")
    return Example(request, target, image_id, "test", {})


def answer(right: bool) -> SegmentationResult:
    mask = OBJECT if right else ~OBJECT
    ones, zeros = np.ones(1, np.float32), np.zeros(1, np.int64)
    return SegmentationResult(masks=mask[None], labels=["the square"], scores=ones, label_ids=zeros)


EXAMPLES = [referring(f"img{k}") for k in range(20)]


def test_a_model_right_on_more_images_is_ahead_beyond_the_noise():
    a = [answer(k < 10) for k in range(20)]  # right on half the images: gIoU 50
    b = [answer(True) for _ in range(20)]
    d = paired_bootstrap(EXAMPLES, a, b, resamples=100)["referring"]
    assert (d.a, d.b, d.delta) == (50.0, 100.0, 50.0)
    assert 0 < d.low <= d.delta <= d.high <= 100
    assert d.b_ahead == 1.0 and d.verdict == "B"
    assert d.share_low > 100
    swapped = paired_bootstrap(EXAMPLES, b, a, resamples=100)["referring"]
    assert swapped.verdict == "A" and swapped.b_ahead == 0.0


def test_identical_answers_give_a_zero_width_interval_because_draws_are_paired():
    a = [answer(k % 3 == 0) for k in range(20)]
    d = paired_bootstrap(EXAMPLES, a, list(a), resamples=50)["referring"]
    assert (d.delta, d.low, d.high, d.b_ahead) == (0.0, 0.0, 0.0, 0.0)
    assert d.verdict == "tie" and d.share_low == d.share_high == 100.0


def test_models_right_on_different_images_tie_and_the_seed_reproduces_the_draws():
    a = [answer(k < 10) for k in range(20)]
    b = [answer(k >= 10) for k in range(20)]
    d = paired_bootstrap(EXAMPLES, a, b, resamples=200, seed=3)["referring"]
    assert d.delta == 0.0 and d.low < 0 < d.high and d.verdict == "tie"
    assert 0.2 < d.b_ahead < 0.8
    assert paired_bootstrap(EXAMPLES, a, b, resamples=200, seed=3)["referring"] == d


def test_a_whole_image_is_drawn_with_all_its_examples():
    # two examples on each image: A is right on both of image 0's and wrong on image 1's. Drawing examples
    # one by one would mix them; drawing images keeps each draw's gIoU a multiple of 1/n_images
    examples = [referring("img0"), referring("img0"), referring("img1"), referring("img1")]
    a = [answer(True), answer(True), answer(False), answer(False)]
    b = [answer(True)] * 4
    d = paired_bootstrap(examples, a, b, resamples=100)["referring"]
    assert d.low in (0.0, 50.0, 100.0) and d.high in (0.0, 50.0, 100.0)


def test_bad_input_is_refused_with_what_to_do():
    a = [answer(True)] * 20
    with pytest.raises(ValueError, match="results for B"):
        paired_bootstrap(EXAMPLES, a, a[:19])
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap([], [], [])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(EXAMPLES, a, a, level=1.5)


def test_the_benchmark_checks_its_arguments_before_inference():
    from research.paired_bootstrap import parse_models, parse_pairs

    models = parse_models(["enc=outputs/a/model", "t=teacher", "lf=runs/s0/model,runs/s1/model"])
    assert models["lf"] == ["runs/s0/model", "runs/s1/model"]
    assert parse_pairs(["t:enc", "enc:lf"], models) == [("t", "enc"), ("enc", "lf")]
    with pytest.raises(SystemExit, match="NAME=MODEL_DIR"):
        parse_models(["outputs/a/model"])
    with pytest.raises(SystemExit, match="used once"):
        parse_models(["enc=a", "enc=b"])
    with pytest.raises(SystemExit, match="teacher is one model"):
        parse_models(["t=teacher,outputs/a/model"])
    with pytest.raises(SystemExit, match="among the --model names"):
        parse_pairs(["t:gated"], models)


def test_one_bootstrap_of_several_models_gives_each_pair_its_paired_comparison():
    models = {
        "t": [answer(True)] * 20,
        "s1": [answer(k < 10) for k in range(20)],
        "s2": [answer(k < 15) for k in range(20)],
    }
    boot = bootstrap(EXAMPLES, models, resamples=60, seed=1)
    assert compare(boot, "s1", "s2") == paired_bootstrap(EXAMPLES, models["s1"], models["s2"], 60, seed=1)
    assert compare(boot, "t", "s2")["referring"].share_high < 100  # s2 keeps 75 % of t, clearly under 100
    with pytest.raises(ValueError, match="not in the bootstrap"):
        compare(boot, "t", "s3")


def test_seed_groups_are_scored_as_the_mean_of_their_models_on_the_same_draws():
    from research.paired_bootstrap import member_names, pair_entry, table

    models = {  # recipe A at two seeds: right on 10 and 12 images; recipe B: on 14 and 16
        "a#0": [answer(k < 10) for k in range(20)],
        "a#1": [answer(k < 12) for k in range(20)],
        "b#0": [answer(k < 14) for k in range(20)],
        "b#1": [answer(k < 16) for k in range(20)],
    }
    boot = bootstrap(EXAMPLES, models, resamples=60, seed=2)
    groups = {"a": member_names("a", ["r0", "r1"]), "b": member_names("b", ["r0", "r1"])}
    mean = average(boot, groups)
    assert mean.full["a"]["referring"] == 55.0 and mean.full["b"]["referring"] == 75.0
    for k in range(60):  # each draw's group metric is its seeds' mean on that same draw
        draw = [boot.draws[m][k]["referring"] for m in groups["a"]]
        assert mean.draws["a"][k]["referring"] == pytest.approx(np.mean(draw))
    entry = pair_entry(boot, groups, {"a": ["r0", "r1"], "b": ["r0", "r1"]}, "a", "b")
    assert entry["tasks"]["referring"]["delta"] == 20.0 and entry["tasks"]["referring"]["ahead"] == "b"
    assert entry["per_seed_delta"] == {"referring": [20.0, 20.0]}
    assert "+20.00, +20.00" in table(entry)
    assert member_names("t", ["teacher"]) == ["t"]  # one model keeps its name: no seed column
    one = pair_entry(boot, {"t": ["a#0"], "b": groups["b"]}, {"t": ["r0"], "b": ["r0", "r1"]}, "t", "b")
    assert "per_seed_delta" not in one and one["a_model"] == "r0" and one["b_model"] == ["r0", "r1"]
    with pytest.raises(ValueError, match="not in the bootstrap"):
        average(boot, {"a": ["a#0", "a#2"]})
    with pytest.raises(ValueError, match="no models"):
        average(boot, {"a": []})
