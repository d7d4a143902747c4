import numpy as np
import pytest

from xsam_edge.data.sample import Example, Target
from xsam_edge.significance import bootstrap, compare, paired_bootstrap
from xsam_edge.types import SegmentationRequest, SegmentationResult, Task

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
    from xsam_edge.benchmarks.paired_bootstrap import parse_models, parse_pairs

    models = parse_models(["enc=outputs/a/model", "t=teacher"])
    assert parse_pairs(["t:enc"], models) == [("t", "enc")]
    with pytest.raises(SystemExit, match="NAME=MODEL_DIR"):
        parse_models(["outputs/a/model"])
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
