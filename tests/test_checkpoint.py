"""Checkpoints: the released archive/main-branch state dict, hostile files, and our own folder format."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import load_file

from xsam_edge.model.build import build_model
from xsam_edge.model.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    from_pretrained,
    import_checkpoint,
    load_upstream_checkpoint,
    read_state_dict,
    save_pretrained,
)
from xsam_edge.model.predictor import XSamPredictor
from xsam_edge.model.presets import TINY
from xsam_edge.spec.tokenizer import TINY_WORDS, XSamTokenizer, build_word_tokenizer, tiny_tokenizer
from xsam_edge.spec.types import SegmentationRequest, Task

IGNORED_KEY = "segmentor.shared_image_embedding.positional_embedding"
ARCHIVE_PREFIXES = (
    "llm.model.",
    "llm.lm_head.",
    "visual_encoder.vision_model.",
    "visual_projector.model.0.",
    "visual_projector.model.2.",
    "seg_projector.model.0.",
    "seg_projector.model.2.",
    "llm_projector.model.0.",
    "llm_projector.model.2.",
    "segmentor.encoder.",
    "segmentor.pixel_decoder.",
    "segmentor.decoder.",
    "seg_connector.model.0.model.",
    "seg_connector.model.1.model.",
    "seg_connector.model.2.model.",
)
EXACT_KEYS = ("segmentor.logit_scale", "bg_embeds.weight")


# -- helpers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source():
    """The model whose weights every checkpoint here carries (seed 0), read-only."""
    return make_tiny_model(0)


@pytest.fixture(scope="module")
def archive_state(source) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state[IGNORED_KEY] = torch.randn(2, 8)  # SAM's positional buffer: in the release, never used
    return state


def _outputs(model, tokenizer, image) -> tuple[torch.Tensor, torch.Tensor]:
    raw = XSamPredictor(model, tokenizer).run(
        SegmentationRequest(image, Task.REFERRING, text="the red circle")
    )
    return torch.from_numpy(raw.class_logits), torch.from_numpy(raw.mask_logits)


def _assert_same_outputs(model, reference, tokenizer, image) -> None:
    cls_a, mask_a = _outputs(model, tokenizer, image)
    cls_b, mask_b = _outputs(reference, tokenizer, image)
    assert torch.equal(cls_a, cls_b)
    assert torch.equal(mask_a, mask_b)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, snapshot) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    assert all(torch.equal(state[k], snapshot[k]) for k in snapshot)


def _target():
    """A model with other weights (seed 1): loading must make it equal to the source."""
    return make_tiny_model(1)


# -- key names -----------------------------------------------------------------------------------------------


def test_state_dict_keys_are_the_archive_names():
    keys = list(build_model("tiny").state_dict())
    for prefix in ARCHIVE_PREFIXES:
        assert any(k.startswith(prefix) for k in keys), prefix
    for key in EXACT_KEYS:
        assert key in keys
    assert "segmentor.logit_scale" in keys and not any("class_predictor" in k for k in keys)
    assert not any(k.startswith(("vision_encoder.", "segmentor.shared_image_embedding")) for k in keys)
    # every key belongs to one of the documented components
    tops = {k.split(".")[0] for k in keys}
    assert tops == {
        "llm",
        "visual_encoder",
        "visual_projector",
        "seg_projector",
        "llm_projector",
        "seg_connector",
        "segmentor",
        "bg_embeds",
    }
    segmentor_parts = {k.split(".")[1] for k in keys if k.startswith("segmentor.")}
    assert segmentor_parts == {"encoder", "pixel_decoder", "decoder", "logit_scale"}


# -- released checkpoint (pickle) ----------------------------------------------------------------------------


def test_archive_checkpoint_loads_and_reproduces_outputs(tmp_path, source, archive_state, tokenizer, image):
    path = tmp_path / "pytorch_model.bin"
    torch.save(archive_state, path)
    target = _target()
    assert not torch.equal(target.bg_embeds.weight, source.bg_embeds.weight)
    report = load_upstream_checkpoint(target, path)
    assert report.ok
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.ignored == [IGNORED_KEY]
    assert report.loaded == len(source.state_dict()) and report.renamed == 0
    assert "ignored 1 unused upstream tensors" in report.summary()
    _assert_same_outputs(target, source, tokenizer, image)


def test_main_branch_names_load_to_identical_outputs(tmp_path, source, archive_state, tokenizer, image):
    renamed = {}
    for key, value in archive_state.items():
        if key.startswith("visual_encoder."):
            key = "vision_encoder." + key[len("visual_encoder.") :]
        elif key == "segmentor.logit_scale":
            key = "segmentor.class_predictor.logit_scale"
        renamed[key] = value
    assert "segmentor.class_predictor.logit_scale" in renamed
    path = tmp_path / "main.bin"
    torch.save(renamed, path)
    target = _target()
    with torch.no_grad():
        target.segmentor.logit_scale.fill_(0.5)  # must be overwritten from the renamed key
    report = load_upstream_checkpoint(target, path)
    visual = sum(k.startswith("visual_encoder.") for k in archive_state)
    assert report.ok and report.renamed == visual + 1
    assert torch.equal(target.segmentor.logit_scale, source.segmentor.logit_scale)
    _assert_same_outputs(target, source, tokenizer, image)


def test_both_names_for_one_tensor_is_an_error(tmp_path, archive_state):
    state = dict(archive_state)
    state["segmentor.class_predictor.logit_scale"] = state["segmentor.logit_scale"]
    path = tmp_path / "both.bin"
    torch.save(state, path)
    with pytest.raises(ValueError, match="both"):
        load_upstream_checkpoint(_target(), path)


def test_bf16_checkpoint_loads_into_fp32(tmp_path, archive_state):
    path = tmp_path / "bf16.bin"
    torch.save({k: v.to(torch.bfloat16) for k, v in archive_state.items()}, path)
    target = _target()
    report = load_upstream_checkpoint(target, path)
    assert report.ok
    for key, value in target.state_dict().items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, archive_state[key].to(torch.bfloat16).float()), key


def test_state_dict_wrapper_is_unwrapped(tmp_path, source, archive_state, tokenizer, image):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": archive_state}, path)
    assert read_state_dict(path).keys() == archive_state.keys()
    target = _target()
    assert load_upstream_checkpoint(target, path).ok
    _assert_same_outputs(target, source, tokenizer, image)


def test_safetensors_checkpoint_is_read(tmp_path, archive_state):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in archive_state.items()}, str(path))
    state = read_state_dict(path)
    assert state.keys() == archive_state.keys()
    assert torch.equal(state["bg_embeds.weight"], archive_state["bg_embeds.weight"])


def test_partial_checkpoint_needs_allow_partial(tmp_path, archive_state):
    path = tmp_path / "stage1.bin"
    partial = {k: v for k, v in archive_state.items() if not k.startswith("llm.")}
    torch.save(partial, path)
    target = _target()
    before = _snapshot(target)
    with pytest.raises(ValueError, match=r"(?s)missing \(llm: \d+\).*allow_partial") as info:
        load_upstream_checkpoint(target, path)
    assert "nothing was loaded" in str(info.value)
    _assert_unchanged(target, before)
    report = load_upstream_checkpoint(target, path, allow_partial=True)
    assert report.missing and all(k.startswith("llm.") for k in report.missing)
    assert report.loaded == len(partial) - 1  # the ignored SAM buffer is not loaded
    state = target.state_dict()
    for key in report.missing:
        assert torch.equal(state[key], before[key]), key  # kept its value
    assert torch.equal(state["bg_embeds.weight"], archive_state["bg_embeds.weight"])


# -- hostile and wrong files ---------------------------------------------------------------------------------


def test_truncated_file_is_refused(tmp_path, archive_state):
    path = tmp_path / "pytorch_model.bin"
    torch.save(archive_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    target = _target()
    before = _snapshot(target)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_upstream_checkpoint(target, path)
    _assert_unchanged(target, before)


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.bin"
    path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        read_state_dict(tmp_path / "missing.bin")


def test_checkpoint_of_another_size_is_refused(tmp_path):
    other = dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, num_queries=12))
    torch.manual_seed(0)
    path = tmp_path / "other.bin"
    torch.save(build_model(other).state_dict(), path)
    target = _target()
    before = _snapshot(target)
    with pytest.raises(
        ValueError, match=r"(?s)does not fit preset 'tiny'.*mis-shaped segmentor\.decoder"
    ) as info:
        load_upstream_checkpoint(target, path)
    assert "[12, 32] vs model [10, 32]" in str(info.value)
    _assert_unchanged(target, before)


def test_checkpoint_of_an_unrelated_module_is_refused(tmp_path):
    path = tmp_path / "linear.bin"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    target = _target()
    before = _snapshot(target)
    with pytest.raises(ValueError, match=r"(?s)nothing was loaded.*2 unexpected") as info:
        load_upstream_checkpoint(target, path)
    message = str(info.value)
    assert "missing" in message and "weight" in message
    _assert_unchanged(target, before)


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about the pickle protocol of plain pickles
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_carrying_code_is_refused_and_not_run(tmp_path, archive_state, writer):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.bin"
    if writer == "torch.save":
        torch.save({**archive_state, "llm.model.norm.weight": _RunsCode(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"llm.model.norm.weight": _RunsCode(marker)}, f)
    assert not marker.exists()
    target = _target()
    before = _snapshot(target)
    with pytest.raises(ValueError, match="refusing to load .*could run code"):
        load_upstream_checkpoint(target, path)
    assert not marker.exists()  # the payload never ran
    _assert_unchanged(target, before)
    if writer == "pickle.dump":  # control: the file really is hostile, an unsafe unpickling runs it
        pickle.loads(path.read_bytes())
        assert marker.exists()


# -- our folder format ---------------------------------------------------------------------------------------


def test_save_then_from_pretrained_is_bit_identical(tmp_path, source, tokenizer, image):
    folder = save_pretrained(source, tmp_path / "model", tokenizer)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, "tokenizer_config.json"]
    )
    loaded = from_pretrained(folder)
    assert loaded.config == source.config
    assert not loaded.training
    _assert_same_outputs(loaded, source, tokenizer, image)
    predictor = XSamPredictor.from_pretrained(folder)
    assert len(predictor.tokenizer) == len(tokenizer)
    cls, mask = _outputs(source, tokenizer, image)
    raw = predictor.run(SegmentationRequest(image, Task.REFERRING, text="the red circle"))
    assert torch.equal(torch.from_numpy(raw.class_logits), cls)
    assert torch.equal(torch.from_numpy(raw.mask_logits), mask)


def test_save_over_an_existing_folder_replaces_it(tmp_path, source, tokenizer):
    target = tmp_path / "model"
    save_pretrained(_target(), target, tokenizer)
    (target / "stale.txt").write_text("from the old folder")
    save_pretrained(source, target, tokenizer)
    assert not (target / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary or old folder left behind
    loaded = from_pretrained(target)
    assert torch.equal(loaded.bg_embeds.weight, source.bg_embeds.weight)


def test_failed_save_keeps_the_old_folder(tmp_path, source, tokenizer, monkeypatch):
    target = tmp_path / "model"
    save_pretrained(source, target, tokenizer)
    before = (target / WEIGHTS_FILE).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("xsam_edge.model.checkpoint.save_model", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(_target(), target, tokenizer)
    assert (target / WEIGHTS_FILE).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_from_pretrained_refuses_a_corrupt_weights_file(tmp_path, source, tokenizer):
    folder = save_pretrained(source, tmp_path / "model", tokenizer)
    weights = folder / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        from_pretrained(folder)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        from_pretrained(folder)


def test_from_pretrained_refuses_weights_of_another_config(tmp_path, source, tokenizer):
    folder = save_pretrained(source, tmp_path / "model", tokenizer)
    other = dataclasses.replace(TINY, decoder=dataclasses.replace(TINY.decoder, num_queries=12))
    (folder / CONFIG_FILE).write_text(other.to_json())
    with pytest.raises(ValueError, match="does not match"):
        from_pretrained(folder)


def test_from_pretrained_refuses_a_newer_config_schema(tmp_path, source):
    folder = save_pretrained(source, tmp_path / "model")
    data = json.loads((folder / CONFIG_FILE).read_text())
    data["schema_version"] += 1
    (folder / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="is newer than this xsam_edge understands"):
        from_pretrained(folder)


def test_from_pretrained_missing_pieces(tmp_path, source, tokenizer):
    with pytest.raises(FileNotFoundError, match="not an xsam_edge model folder"):
        from_pretrained(tmp_path)
    folder = save_pretrained(source, tmp_path / "model", None)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        XSamPredictor.from_pretrained(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        from_pretrained(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid xsam_edge config"):
        from_pretrained(folder)


# -- import_checkpoint ---------------------------------------------------------------------------------------


def _tokenizer_of_size(size: int) -> XSamTokenizer:
    """The tiny word list padded with filler words to exactly ``size`` entries."""
    base = len(tiny_tokenizer())
    words = list(TINY_WORDS) + [f"filler{i}" for i in range(size - base)]
    return XSamTokenizer(build_word_tokenizer(words, size), TINY.tokens, bos_token="<s>", pad_token="<pad>")


def test_import_checkpoint_end_to_end(tmp_path, source, archive_state, image):
    tok_dir = tmp_path / "tokenizer"
    full = _tokenizer_of_size(TINY.llm.vocab_size)
    full.save(tok_dir)
    reread = XSamTokenizer.from_pretrained_dir(tok_dir, TINY.tokens)
    assert len(reread) == TINY.llm.vocab_size
    assert reread.encode("<p>red circle</p>") == full.encode("<p>red circle</p>")
    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(archive_state, ckpt)
    out = tmp_path / "imported"
    report = import_checkpoint(ckpt, "tiny", tok_dir, out)
    assert report.ok and report.ignored == [IGNORED_KEY]
    assert {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE} <= set(os.listdir(out))
    predictor = XSamPredictor.from_pretrained(out)
    assert len(predictor.tokenizer) == TINY.llm.vocab_size
    request = SegmentationRequest(image, Task.REFERRING, text="the red circle")
    raw = predictor.run(request)
    reference = XSamPredictor(source, reread).run(request)
    np.testing.assert_array_equal(raw.class_logits, reference.class_logits)
    np.testing.assert_array_equal(raw.mask_logits, reference.mask_logits)


def test_import_checkpoint_bf16_folder(tmp_path, archive_state):
    tok_dir = tmp_path / "tokenizer"
    _tokenizer_of_size(TINY.llm.vocab_size).save(tok_dir)
    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(archive_state, ckpt)
    import_checkpoint(ckpt, "tiny", tok_dir, tmp_path / "bf16", dtype="bfloat16")
    stored = load_file(tmp_path / "bf16" / WEIGHTS_FILE)
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}  # the folder holds bf16 weights
    assert torch.equal(stored["bg_embeds.weight"], archive_state["bg_embeds.weight"].to(torch.bfloat16))
    # from_pretrained builds in the default dtype: the bf16 values come back exactly, as float32
    loaded = from_pretrained(tmp_path / "bf16")
    assert torch.equal(loaded.bg_embeds.weight, stored["bg_embeds.weight"].float())
    assert torch.get_default_dtype() == torch.float32  # restored after the build
    with pytest.raises(ValueError, match="dtype 'int8' not supported"):
        import_checkpoint(ckpt, "tiny", tok_dir, tmp_path / "x", dtype="int8")


def test_import_checkpoint_refuses_a_wrong_tokenizer_before_building(tmp_path, archive_state):
    tok_dir = tmp_path / "tokenizer"
    _tokenizer_of_size(600).save(tok_dir)
    with pytest.raises(ValueError, match=r"has 600 tokens .* embeds 512"):
        import_checkpoint(tmp_path / "never-read.bin", "tiny", tok_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_checkpoint_with_the_tiny_tokenizer(tmp_path, archive_state):
    tok_dir = tmp_path / "tokenizer"
    tiny_tokenizer().save(tok_dir)
    assert len(XSamTokenizer.from_pretrained_dir(tok_dir, TINY.tokens)) == len(tiny_tokenizer())
    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(archive_state, ckpt)
    report = import_checkpoint(ckpt, "tiny", tok_dir, tmp_path / "imported")
    assert report.ok
    assert XSamPredictor.from_pretrained(tmp_path / "imported")


# -- configs checked before anything is built (issue #34) ---------------------------------------------------
@pytest.mark.parametrize(
    "config, expected",
    [
        ([], "must be a JSON object"),
        ({"schema_version": 1}, "has no llm"),
        ({k: v for k, v in TINY.to_dict().items() if k != "llm"}, "has no llm"),
        ({**TINY.to_dict(), "llm": {**TINY.to_dict()["llm"], "hidden_size": 10**9}}, "hidden_size"),
        ({**TINY.to_dict(), "decoder": {**TINY.to_dict()["decoder"], "logit_clamp": "big"}}, "finite number"),
        ({**TINY.to_dict(), "tokens": {**TINY.to_dict()["tokens"], "seg": ""}}, "non-empty"),
    ],
    ids=["a list", "no sections", "no llm", "a giant llm", "a string number", "an empty marker"],
)
def test_a_bad_config_is_refused_before_any_model_is_built(tmp_path, source, tokenizer, config, expected):
    folder = save_pretrained(source, tmp_path / "m", tokenizer)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=expected):
        from_pretrained(folder)


def test_a_full_size_config_over_small_weights_is_refused_without_allocating(tmp_path, source, tokenizer):
    """x-sam-phi3's config beside the tiny weights: refused from the header, before 18 GB are asked for."""
    import resource

    from xsam_edge.model.presets import X_SAM_PHI3

    folder = save_pretrained(source, tmp_path / "m", tokenizer)
    (folder / "config.json").write_text(X_SAM_PHI3.to_json())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="does not match"):
        from_pretrained(folder)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1024, grown_mb  # the full model in fp32 would be 18 000 MB
