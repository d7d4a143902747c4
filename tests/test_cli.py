"""``xsam-edge`` in-process (``cli.main``) and once through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, make_tiny_model
from PIL import Image

from xsam_edge.cli import EXIT_USER_ERROR, main
from xsam_edge.model.presets import TINY
from xsam_edge.spec.tokenizer import TINY_WORDS, XSamTokenizer, build_word_tokenizer, tiny_tokenizer


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    """Input files: a normal PNG and the odd ones the CLI must convert or refuse."""
    image = make_image()  # 48 x 80
    paths = {name: tmp_path / f"{name}.png" for name in ("rgb", "gray", "rgba", "deep", "one")}
    Image.fromarray(image).save(paths["rgb"])
    Image.fromarray(image[:, :, 0]).save(paths["gray"])
    rgba = np.dstack([image, np.full(image.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    deep = Image.fromarray(image[:, :, 0].astype(np.uint16) * 257)
    assert deep.mode.startswith("I;16")
    deep.save(paths["deep"])
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(paths["one"])
    paths["text"] = tmp_path / "notes.png"
    paths["text"].write_text("this is not an image\n")
    paths["out"] = tmp_path / "out"
    paths["out"].mkdir()
    return paths


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, verb: str, expected: str) -> None:
    assert code == EXIT_USER_ERROR == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"xsam-edge {verb}: error: ")
    assert expected in lines[0], lines[0]


# -- info ----------------------------------------------------------------------------------------------------


def test_info_json_schema(capsys):
    code, out, _ = _run(["info", "--preset", "x-sam-phi3", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert isinstance(data["components"], dict) and data["components"]
    for name, cost in data["components"].items():
        assert isinstance(name, str)
        assert set(cost) >= {"params", "macs"}
        assert type(cost["params"]) is int and type(cost["macs"]) is int
    assert type(data["total_params"]) is int
    assert data["total_params"] == sum(c["params"] for c in data["components"].values())
    assert abs(data["total_params"] / 4.62e9 - 1) < 0.01


def test_info_table(capsys):
    code, out, _ = _run(["info", "--preset", "tiny"], capsys)
    assert code == 0
    assert "llm" in out and "total" in out and "preset tiny" in out


def test_info_unknown_preset(capsys):
    code, _, err = _run(["info", "--preset", "nope"], capsys)
    _assert_one_line_error(code, err, "info", "unknown preset 'nope'; known presets:")
    assert "x-sam-phi3" in err and "tiny" in err


# -- segment: success ----------------------------------------------------------------------------------------


def test_segment_writes_overlay_and_json(files, capsys):
    out = files["out"] / "r.png"
    code, stdout, err = _run(
        ["segment", "--preset", "tiny", "--image", files["rgb"], "--text", "the red circle", "--out", out],
        capsys,
    )
    assert code == 0, err
    assert "random, untrained weights" in err and "Traceback" not in err
    assert out.is_file() and out.with_suffix(".json").is_file()
    overlay = np.asarray(Image.open(out))
    assert overlay.shape == (48, 80, 3) and overlay.dtype == np.uint8
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["task"] == "referring" and summary["image"] == str(files["rgb"])
    assert [m["label"] for m in summary["masks"]] == ["the red circle"]
    mask = summary["masks"][0]
    assert 0 <= mask["score"] <= 1 and mask["label_id"] == 0
    if mask["area"]:  # the overlay is tinted inside the mask
        assert not np.array_equal(overlay, make_image())
    assert f"wrote {out}" in stdout
    assert sorted(os.listdir(files["out"])) == ["r.json", "r.png"]  # no temporary files left


@pytest.mark.parametrize("kind", ["gray", "rgba", "deep"])
def test_segment_converts_grayscale_rgba_and_16_bit(files, capsys, kind):
    out = files["out"] / f"{kind}.png"
    code, _, err = _run(
        ["segment", "--preset", "tiny", "--image", files[kind], "--text", "red", "--out", out], capsys
    )
    assert code == 0, err
    assert np.asarray(Image.open(out)).shape == (48, 80, 3)
    assert json.loads(out.with_suffix(".json").read_text())["masks"][0]["label"] == "red"


@pytest.mark.parametrize(
    ("args", "task", "count"),
    [
        (["--categories", "red circle, blue square"], "panoptic", None),
        (["--point", "20,24", "--box", "50,10,75,38", "--scribble", "5,5;30,30"], "interactive", 3),
        (["--task", "visual_grounded", "--point", "20,24"], "visual_grounded", None),
        (["--task", "semantic", "--categories", "circle,square"], "semantic", None),
    ],
)
def test_segment_other_queries(files, capsys, args, task, count):
    out = files["out"] / "q.png"
    code, _, err = _run(["segment", "--preset", "tiny", "--image", files["rgb"], *args, "--out", out], capsys)
    assert code == 0, err
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["task"] == task
    if count is not None:
        assert [m["label"] for m in summary["masks"]] == [f"prompt {k}" for k in range(count)]


def test_segment_mask_prompt_file(files, capsys):
    mask = np.zeros((48, 80), np.uint8)
    mask[10:30, 50:70] = 255
    mask_path = files["out"].parent / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = files["out"] / "m.png"
    code, _, err = _run(
        ["segment", "--preset", "tiny", "--image", files["rgb"], "--mask", mask_path, "--out", out], capsys
    )
    assert code == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["masks"][0]["label"] == "prompt 0"


# -- segment: user errors ------------------------------------------------------------------------------------

ERRORS = {
    "missing image": (["--image", "{missing}", "--text", "a"], "no such file"),
    "text file named .png": (["--image", "{text}", "--text", "a"], "is not an image PIL can read"),
    "1x1 image": (["--image", "{one}", "--text", "a"], "is 1x1 pixels; at least 2x2 is needed"),
    "empty text": (["--image", "{rgb}", "--text", ""], "needs a non-empty text"),
    "point outside": (
        ["--image", "{rgb}", "--point", "100,5"],
        "point (100.0, 5.0) is outside the 80x48 image",
    ),
    "malformed point": (
        ["--image", "{rgb}", "--point", "1"],
        "--point needs 2 comma-separated numbers, got '1'",
    ),
    "box x0 > x1": (["--image", "{rgb}", "--box", "30,5,10,20"], "box needs x0 < x1 and y0 < y1"),
    "malformed box": (["--image", "{rgb}", "--box", "1,2,x,4"], "--box needs 4 comma-separated numbers"),
    "malformed scribble": (["--image", "{rgb}", "--scribble", "1,2;3"], "--scribble point needs 2"),
    "missing mask file": (["--image", "{rgb}", "--mask", "{missing}"], "no such file"),
    "unknown task": (
        ["--image", "{rgb}", "--task", "bogus", "--text", "a"],
        "unknown task 'bogus'; tasks: referring",
    ),
    "no query": (["--image", "{rgb}"], "give a query: --text, --categories, or a visual prompt"),
    "empty category": (
        ["--image", "{rgb}", "--categories", "red,"],
        "needs a list of non-empty category names",
    ),
    "reserved marker": (["--image", "{rgb}", "--text", "the <SEG> circle"], "reserved marker"),
    "missing output folder": (
        ["--image", "{rgb}", "--text", "a", "--out", "{missing}/r.png"],
        "no such folder",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_segment_user_errors(files, capsys, case):
    args, expected = ERRORS[case]
    names = {**{k: str(v) for k, v in files.items()}, "missing": str(files["out"].parent / "nope")}
    argv = ["segment", "--preset", "tiny", "--out", str(files["out"] / "r.png")]
    argv += [a.format(**names) for a in args]
    code, _, err = _run(argv, capsys)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("note: preset"))
    _assert_one_line_error(code, err, "segment", expected)
    if case != "missing output folder":
        assert not (files["out"] / "r.png").exists()


def test_segment_missing_model_folder(files, capsys, tmp_path):
    code, _, err = _run(
        ["segment", "--model", tmp_path / "no-such-model", "--image", files["rgb"], "--text", "a"], capsys
    )
    _assert_one_line_error(code, err, "segment", "is not an xsam_edge model folder (no config.json)")


def test_segment_unknown_preset(files, capsys):
    code, _, err = _run(["segment", "--preset", "tiny2", "--image", files["rgb"], "--text", "a"], capsys)
    _assert_one_line_error(code, err, "segment", "unknown preset 'tiny2'; known presets:")


def test_segment_full_preset_without_tokenizer(files, capsys):
    code, _, err = _run(["segment", "--preset", "x-sam-phi3", "--image", files["rgb"], "--text", "a"], capsys)
    _assert_one_line_error(code, err, "segment", "needs its tokenizer")


# -- import-checkpoint ---------------------------------------------------------------------------------------


def _tokenizer_dir(tmp_path: Path) -> Path:
    """A word-level tokenizer with exactly as many entries as the tiny LLM embeds (512)."""
    fillers = [f"filler{i}" for i in range(TINY.llm.vocab_size - len(tiny_tokenizer()))]
    words = list(TINY_WORDS) + fillers
    tok = XSamTokenizer(build_word_tokenizer(words, 512), TINY.tokens, bos_token="<s>", pad_token="<pad>")
    assert len(tok) == TINY.llm.vocab_size
    tok.save(tmp_path / "tokenizer")
    return tmp_path / "tokenizer"


def test_import_checkpoint_then_segment_with_the_folder(files, capsys, tmp_path):
    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(make_tiny_model(0).state_dict(), ckpt)
    tok_dir = _tokenizer_dir(tmp_path)
    model_dir = tmp_path / "model"
    code, out, err = _run(
        [
            "import-checkpoint",
            "--checkpoint",
            ckpt,
            "--preset",
            "tiny",
            "--tokenizer",
            tok_dir,
            "--out",
            model_dir,
        ],
        capsys,
    )
    assert code == 0, err
    assert "loaded 299 tensors" in out and f"wrote {model_dir}" in out
    result = files["out"] / "m.png"
    code, _, err = _run(
        [
            "segment",
            "--model",
            model_dir,
            "--image",
            files["rgb"],
            "--text",
            "the red circle",
            "--out",
            result,
        ],
        capsys,
    )
    assert code == 0, err
    assert "random, untrained" not in err
    assert result.is_file()


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_import_checkpoint_bad_file(files, capsys, tmp_path, content):
    ckpt = tmp_path / "pytorch_model.bin"
    if content == "text":
        ckpt.write_text("hello, this is not a checkpoint\n")
    else:
        torch.save(make_tiny_model(0).state_dict(), ckpt)
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    tok_dir = _tokenizer_dir(tmp_path)
    code, _, err = _run(
        [
            "import-checkpoint",
            "--checkpoint",
            ckpt,
            "--preset",
            "tiny",
            "--tokenizer",
            tok_dir,
            "--out",
            tmp_path / "m",
        ],
        capsys,
    )
    _assert_one_line_error(code, err, "import-checkpoint", "not a PyTorch checkpoint")
    assert not (tmp_path / "m").exists()


# -- the installed console script ----------------------------------------------------------------------------


@pytest.mark.slow  # two fresh interpreters importing torch and transformers: ~10 s
def test_console_script(tmp_path):
    script = shutil.which("xsam-edge") or str(Path(sys.executable).with_name("xsam-edge"))
    assert Path(script).is_file(), "xsam-edge is not installed (pip install -e .)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("XSAM_EDGE_DEBUG", None)
    ok = subprocess.run(
        [script, "info", "--preset", "tiny", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["preset"] == "tiny"
    bad = subprocess.run(
        [script, "segment", "--preset", "tiny", "--image", str(tmp_path / "missing.png"), "--text", "a"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"xsam-edge segment: error: no such file: {tmp_path / 'missing.png'}"
    ]


# -- every verb: one line and exit 2 for a user error (issue #34) -------------------------------------------
def test_a_file_where_the_output_folder_goes(files, capsys):
    blocker = files["out"] / "test.png"
    blocker.write_bytes(b"a file, not a folder")
    code, _, err = _run(["export", "--preset", "tiny", "--backend", "onnx", "--out", blocker / "b"], capsys)
    _assert_one_line_error(code, err, "export", "is a file, not a folder")


def test_a_hostile_train_state_is_refused_in_one_line(files, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/xsam-pwned",))

    run = files["out"] / "run"
    run.mkdir()
    (run / "train_state.pt").write_bytes(pickle.dumps({"progress": Evil()}))
    code, _, err = _run(["train", "--preset", "tiny", "--out", run, "--steps", "1,1,1"], capsys)
    _assert_one_line_error(code, err, "train", "no code from it ran")
    assert not Path("/tmp/xsam-pwned").exists()


@pytest.mark.parametrize(
    "argv, verb, expected",
    [
        (["info", "--preset", "tiny", "--text-tokens", "-5"], "info", "--text-tokens"),
        (["info"], "info", "--preset"),
        (["eval", "--model", "nowhere"], "eval", "nowhere"),
        (["export", "--preset", "tiny", "--backend", "tflite", "--out", "x"], "export", "unknown backend"),
        (["quantize", "--recipe", "nope", "--out", "x"], "quantize", "nope"),
        (["run", "--bundle", "nowhere", "--backend", "onnx", "--image", "x.png"], "run", "x.png"),
        (["reference", "--model", "nowhere", "--out", "g"], "reference", "nowhere"),
        (["bench", "--bundle", "nowhere", "--golden", "g"], "bench", "nowhere"),
        (["distill", "--teacher", "nowhere", "--student-preset", "nope", "--out", "x"], "distill", "nowhere"),
        (["prune", "--teacher", "nowhere", "--out", "x"], "prune", ""),
        (["sign", "--bundle", "nowhere", "--key", "k.pem"], "sign", "nowhere"),
        (["pipeline", "--student", "nope"], "pipeline", "nope"),
        (["cache"], "cache", ""),
        (["segment", "--preset", "tiny", "--image", "x.png", "--text", "a"], "segment", "x.png"),
        (["import-checkpoint", "--checkpoint", "x.bin"], "import-checkpoint", ""),
        (["train", "--steps", "1,2", "--out", "x"], "train", "--steps"),
    ],
)
def test_every_verb_reports_a_user_error_in_one_line(argv, verb, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:  # argparse errors exit; library errors return
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    assert raised.value.code == EXIT_USER_ERROR, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith(f"xsam-edge {verb}"), err
    assert expected in lines[0], lines[0]


def test_export_takes_a_tokenizer_for_a_preset(capsys, tmp_path):
    """A preset has no tokenizer of its own: ``--tokenizer`` gives it one (issue #35); with ``--model``, whose
    folder holds its own, it is refused."""
    tok_dir = _tokenizer_dir(tmp_path)
    out = tmp_path / "bundle"
    argv = ["export", "--preset", "tiny", "--tokenizer", tok_dir, "--backend", "onnx", "--out", out]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert (out / "tokenizer.json").is_file() and (out / "onnx" / "segment.onnx").is_file()
    code, _, err = _run(
        ["export", "--model", tmp_path, "--tokenizer", tok_dir, "--out", tmp_path / "b2"], capsys
    )
    _assert_one_line_error(code, err, "export", "tokenizer")
