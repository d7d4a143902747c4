import json
import os

import pytest

from xsam_edge.cli import main
from xsam_edge.distill.config import StudentRecipe
from xsam_edge.pipeline import run_pipeline
from xsam_edge.spec.types import Task
from xsam_edge.training.teacher import TeacherRecipe, cache_root, ensure_teacher

TINY_RECIPE = TeacherRecipe(preset="tiny", steps=(2, 2, 3), batch_size=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, so the tiny teacher trains once."""
    folder = tmp_path_factory.mktemp("xsam") / "cache"
    previous = os.environ.get("XSAM_EDGE_CACHE")
    os.environ["XSAM_EDGE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["XSAM_EDGE_CACHE"]
    else:
        os.environ["XSAM_EDGE_CACHE"] = previous


def test_teacher_is_trained_once_and_cached(cache):
    first = ensure_teacher(TINY_RECIPE)
    assert first.is_relative_to(cache_root()) and (first / "config.json").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_teacher(TINY_RECIPE) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    other = ensure_teacher(TeacherRecipe(preset="tiny", steps=(2, 2, 4), batch_size=2))
    assert other != first  # another recipe never reuses stale weights


def test_pipeline_writes_a_report_and_resumes(cache, tmp_path):
    out = tmp_path / "run"
    options = dict(
        data="shapes:val-fast",
        limit=1,
        teacher=TINY_RECIPE,
        recipes=("jetson-trt",),
        quant_limit=1,
        student=StudentRecipe("tiny", "tiny-student", 2),
        bench_repeats=1,
    )
    report = run_pipeline(out, **options)
    text = report.read_text()
    assert "xsam_edge pipeline report" in text and "## Not run" in text and "Jetson" in text
    assert "## Quantization recipes" in text and "| jetson-trt | onnx |" in text
    # every bundle benched against the teacher's golden reference: float, the recipe, the student
    assert "## Bench against the golden reference" in text
    for row in ("| float | onnx |", "| jetson-trt | onnx |", "| student-tiny | onnx |"):
        assert row in text, text
    bench = {r["label"]: r for r in json.loads((out / "report.json").read_text())["bench"]}
    assert (
        bench["float"]["golden"]["relation"] == "same"
        and bench["student-tiny"]["golden"]["relation"] == "student"
    )
    assert bench["float"]["accuracy"]["flagged_graphs"] == []
    assert all(r["latency"]["first_query"]["p50_ms"] > 0 for r in bench.values())
    summary = json.loads((out / "report.json").read_text())
    assert set(summary["teacher_eval"]["tasks"]) == {t.value for t in Task}
    assert set(summary["teacher_eval"]["baselines"]) == {"whole_image", "centre_box"}
    assert summary["machine"]["cores"] >= 1
    assert all((out / e["file"]).is_file() for e in summary["examples"].values())
    before = (out / "teacher_eval.json").stat().st_mtime_ns
    recipe_row = out / "quantization" / "jetson-trt.json"
    row_stamp = recipe_row.stat().st_mtime_ns
    bench_row = out / "bench" / "student-tiny-onnx.json"
    bench_stamp = bench_row.stat().st_mtime_ns
    eval_stamp = (out / "student-tiny" / "eval.json").stat().st_mtime_ns
    bench_row.unlink()  # as if killed before the student's bench finished
    (out / "report.md").unlink()
    run_pipeline(out, **options)
    assert (out / "teacher_eval.json").stat().st_mtime_ns == before  # a finished step is not redone
    assert recipe_row.stat().st_mtime_ns == row_stamp
    assert (out / "bench" / "float-onnx.json").is_file() and bench_row.stat().st_mtime_ns != bench_stamp
    assert "| student-tiny | onnx |" in (out / "report.md").read_text()
    assert summary["student"]["recipe"]["preset"] == "tiny-student" and "## Student `tiny`" in text
    # the student scored on the teacher's data, task by task, next to the teacher and as a share of it
    student_eval = summary["student"]["eval"]
    assert set(student_eval["tasks"]) == set(summary["teacher_eval"]["tasks"])
    assert "| task | metric | teacher | student | student / teacher |" in text and "| panoptic | pq |" in text
    assert (out / "student-tiny" / "eval.json").stat().st_mtime_ns == eval_stamp  # not redone on resume
    # another student recipe in the same folder is distilled anew, never mistaken for the first
    other = run_pipeline(out, **options | {"student": StudentRecipe("other", "tiny-student", 3)})
    text = other.read_text()
    assert "| student-other | onnx |" in text and "| student-tiny | onnx |" not in text
    assert (out / "student-other" / "model").is_dir() and (out / "student-tiny" / "model").is_dir()


def test_eval_unknown_dataset_is_a_clear_error(cache, capsys):
    model_dir = ensure_teacher(TINY_RECIPE)
    capsys.readouterr()  # drop training progress bars
    assert main(["eval", "--model", str(model_dir), "--data", "nope:val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_eval_and_cache_cli(cache, capsys):
    model_dir = ensure_teacher(TINY_RECIPE)
    capsys.readouterr()
    assert (
        main(["eval", "--model", str(model_dir), "--data", "shapes:val-fast", "--limit", "1", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"tasks", "baselines"}
    assert report["tasks"]["referring"].keys() >= {"ciou", "giou"}
    assert report["tasks"]["panoptic"].keys() >= {"pq", "sq", "rq"}
    assert main(["eval", "--model", str(model_dir), "--data", "shapes:val-fast", "--limit", "1"]) == 0
    table = capsys.readouterr().out
    assert "referring" in table and "whole_image" in table
    assert main(["cache", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(cache)
    assert main(["cache", "--clear"]) == 0
    assert not cache.exists()


def test_pipeline_cli_picks_the_student_recipe_by_name(monkeypatch, tmp_path, capsys):
    """`--student NAME` reaches run_pipeline as that recipe, `none` as no student; a typo is refused."""
    import xsam_edge.pipeline
    from xsam_edge.distill.config import STUDENT_RECIPES

    calls = []

    def record(out, **kwargs):  # the wiring only: the pipeline itself runs in the test above
        calls.append(kwargs)
        report = tmp_path / "report.md"
        report.write_text("# report\n")
        return report

    monkeypatch.setattr(xsam_edge.pipeline, "run_pipeline", record)
    assert main(["pipeline", "--out", str(tmp_path), "--student", "gated-5600"]) == 0
    assert main(["pipeline", "--out", str(tmp_path), "--student", "none"]) == 0
    assert main(["pipeline", "--out", str(tmp_path)]) == 0
    assert [c["student"] for c in calls] == [STUDENT_RECIPES["gated-5600"], None, STUDENT_RECIPES["quick"]]
    with pytest.raises(SystemExit):
        main(["pipeline", "--student", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_the_shipped_teacher_is_checked_and_used_unless_retrained(cache, tmp_path, monkeypatch):
    import dataclasses

    import xsam_edge.training.teacher as teacher

    model_dir = ensure_teacher(TINY_RECIPE)
    target = tmp_path / "assets" / "teacher"
    record = {"recipe": dataclasses.asdict(TINY_RECIPE), "command": "xsam-edge train ...", "minutes": 0.1}
    teacher.ship_teacher(model_dir, record, target)
    monkeypatch.setattr(teacher, "SHIPPED_DIR", target)
    folder, shipped = teacher.shipped_teacher()
    assert folder == target and shipped["fingerprint"] == TINY_RECIPE.fingerprint()
    assert set(shipped["sha256"]) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert teacher.shipped_recipe() == TINY_RECIPE
    # the shipped one serves the default and its own recipe; retraining or another recipe uses the cache
    assert ensure_teacher() == target and ensure_teacher(TINY_RECIPE) == target
    assert ensure_teacher(TINY_RECIPE, retrain=True) == model_dir
    # a damaged install is refused, naming the file and the fix
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="model.safetensors does not match its recorded sha256.*reinstall"):
        ensure_teacher()
    monkeypatch.setattr(teacher, "SHIPPED_DIR", tmp_path / "nothing")
    with pytest.raises(RuntimeError, match="the shipped teacher is missing"):
        ensure_teacher()


def test_the_package_ships_a_teacher_that_loads():
    from xsam_edge.model.predictor import XSamPredictor
    from xsam_edge.training.teacher import shipped_teacher

    folder, record = shipped_teacher()
    assert record["recipe"]["preset"] == "shapes-teacher" and record["eval"]["data"] == "shapes:val"
    predictor = XSamPredictor.from_pretrained(folder)
    assert predictor.model.config.name == "shapes-teacher"
