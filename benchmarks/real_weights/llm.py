"""How much perplexity a real small LLM loses under the project's quantization, on text it never saw.

Why: the issue's goals (INT4, mixed INT4/INT8 allowed, within +10 % perplexity; INT8 within +0.5 %) are only
meaningful on real weights and held-out text. What: Qwen2.5-Coder-0.5B-Instruct (the test bed's GGUF,
dequantized to float32: the reference) goes through ``quantize_model`` per backend and scheme; each result
runs in its own runtime (OpenVINO CPU, ONNX Runtime CPU) on fixed-length windows of the Lee news corpus,
and its perplexity is compared with the same backend's float32 export, paired window by window (spread and a
bootstrap 95 % CI). Data-aware schemes calibrate on Python's ``pydoc_data`` topics only; the fidelity the
report measures uses three more Lee windows, disjoint from the evaluation ones.

Run: ``python -m benchmarks.real_weights.llm [--windows N] [--backends openvino,onnx] [--out DIR]``
(``--dq-off``: OpenVINO again without its runtime activation quantization; ``--eval-text pydoc``: score
in-distribution windows instead). Quantized files and per-window results are cached under
``$XSAM_EDGE_TESTBED/work/llm/`` (a second run skips what is done). Writes
``docs/results/data/real-weights-llm-<date>[-<tag>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import RESULTS_DIR
from benchmarks.real_weights.common import atomic_json, calibration_text, log, read_json, write_text
from benchmarks.real_weights.fetch import ARTEFACTS, cache_dir, fetch

GGUF = "qwen2.5-coder-0.5b-instruct.gguf"
WINDOW = 256  # tokens per window: static shapes for the exports
WINDOWS = 24  # evaluation windows (Lee corpus)
HOLDOUT = 3  # Lee windows for quantize_model's fidelity report (the corpus's last ones; never evaluated)
CALIBRATION = 16  # pydoc windows for data-aware schemes
BOOTSTRAP = 1000
GOALS = {"int8": 0.5, "int4": 10.0}  # the perplexity goals, % over float

# key → (scheme table, backends it runs on). Data-aware INT4 is NNCF's AWQ + scale estimation: ONNX ignores
# data_aware (RTN), so its mixed row is data-free and named for it.
W4_G64 = {"scheme": "w4", "group_size": 64, "symmetric": False}  # asymmetric INT4 in groups of 64
SCHEMES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "fp32": ({"scheme": "fp32"}, ("openvino", "onnx", "executorch")),
    "w8": ({"scheme": "w8"}, ("openvino", "onnx")),
    "w4-g64": (W4_G64, ("openvino", "onnx")),
    # the output layer (and a table tied to it) at INT4 too; w4 keeps it at INT8 (head_bits 8)
    "w4-g64-h4": ({**W4_G64, "head_bits": 4}, ("openvino", "onnx")),
    "w4-g64-awq": ({**W4_G64, "data_aware": True}, ("openvino",)),
    "w4-g64-awq-r80": ({**W4_G64, "data_aware": True, "ratio": 0.8}, ("openvino",)),
    "w4-g64-r80": ({**W4_G64, "ratio": 0.8}, ("onnx",)),
    "w4-g32": ({"scheme": "w4", "group_size": 32, "symmetric": False}, ("openvino", "onnx")),
    # ExecuTorch's LLM scheme: INT4 weights in groups of 32, INT8 activations per token (XNNPACK)
    "8da4w-g32": ({"scheme": "8da4w", "group_size": 32}, ("executorch",)),
    "8da4w-g32-h8": ({"scheme": "8da4w", "group_size": 32, "head_bits": 8}, ("executorch",)),
    # mixed: the 20 % of the other Linear weights that INT4 resolves worst at INT8 (data-free ranking)
    "8da4w-g32-r80-h8": (
        {"scheme": "8da4w", "group_size": 32, "head_bits": 8, "ratio": 0.8},
        ("executorch",),
    ),
}
DEFAULT_SCHEMES = ("fp32", "w8", "w4-g64", "w4-g64-awq", "w4-g64-awq-r80", "w4-g64-r80")  # w4-g32: opt-in
CAVEATS = (
    "The float32 reference is the GGUF dequantized: its weights already lie on a Q5_0 (some Q8_0/Q4_K/Q6_K) "
    "grid, so re-quantizing to INT8 loses less than it would from a true bf16 checkpoint, and INT4 starts "
    "from 5-bit blocks of 32.",
    "The GGUF stores output.weight apart from token_embd.weight (untied, 2 x 136 M parameters of 630 M): "
    "the float32 files are ~2.5 GB where a tied export would be ~2.0 GB; both matrices are quantized "
    "(w4 keeps the head and the embedding at INT8 on both backends since 2026-12-06, head_bits 8; before, "
    "ORT's w4 packed both at INT4; the -h4 rows pack them at INT4).",
    "Each window is scored on its own (no context carried between windows); every window predicts "
    "WINDOW - 1 tokens, so perplexity is exp of the mean per-window NLL.",
    "OpenVINO's CPU plugin runs weight-compressed layers with INT8 dynamic activation quantization "
    "(DYNAMIC_QUANTIZATION_GROUP_SIZE 32 by default, even at FP32 inference precision): the OpenVINO rows "
    "measure weights and that together; with --dq-off, rows marked (dq off) turn it off. ORT's "
    "MatMulNBits (no accuracy_level) computes in float.",
    "ONNX w8 quantized MatMuls only until 2026-12-06, so the untied runs before it keep the embedding table "
    "(a Gather) float, hence their larger file; since then a lookup table is packed at INT8 too.",
    "quantize s is quantize_model's wall time: each OpenVINO row includes exporting the module again "
    "(~40 s); ONNX rows after fp32 start from its exported file.",
    "w4 rows are asymmetric INT4; the mixed rows (-r80) keep about 20 % of the weights at INT8 (NNCF's "
    "ranking on OpenVINO, the largest INT4 weight error on ONNX and ExecuTorch).",
)


TIED_CAVEAT = (
    "--tied: the input embedding reads the GGUF's output.weight (one table, as the model was trained; the "
    "GGUF's token_embd.weight is the same matrix at another precision, 4.4 % apart), so the float32 files "
    "are ~2.0 GB and the eager reference differs from the untied runs'. ONNX w8 / w4 store the table once "
    "(the lookup reads the head's packed blocks); ExecuTorch keeps a tied program's weights in one .ptd, "
    "equal bytes once: fp32 and an INT8 head (-h8) share the lookup's table, an INT4 head does not."
)


class Logits(torch.nn.Module):
    """``input_ids (1, T) → logits (1, T, vocab)``: one positional input, one tensor out, no KV cache."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def load_model(folder: Path, tied: bool = False) -> tuple[Any, Logits]:
    """The tokenizer and the float32 model (eager attention: plain ops, export-friendly).

    ``tied``: one table for the input embedding and the head, the GGUF's ``output.weight`` (the model was
    trained tied; the GGUF stores the two at different precisions, 4.4 % apart), as a tied checkpoint loads.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    lm = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF, dtype=torch.float32, attn_implementation="eager"
    )
    if tied:
        lm.model.embed_tokens.weight = lm.lm_head.weight
        lm.config.tie_word_embeddings = True
    return tokenizer, Logits(lm).eval()


def chunks(tokenizer: Any, text: str, window: int) -> np.ndarray:
    """``text`` tokenized and cut into non-overlapping ``(n, window)`` int64 windows (the tail dropped)."""
    ids = np.asarray(tokenizer(text).input_ids, dtype=np.int64)
    n = len(ids) // window
    return ids[: n * window].reshape(n, window)


def spaced(count: int, available: int) -> list[int]:
    """``count`` indices spread evenly over ``range(available)``."""
    if count > available:
        raise SystemExit(f"asked for {count} windows, the text holds {available}")
    return sorted({int(round(i)) for i in np.linspace(0, available - 1, count)})


def window_nll(logits: np.ndarray, ids: np.ndarray) -> tuple[float, list[int]]:
    """Mean next-token NLL of one window (float64 log-softmax) and the argmax next-token predictions."""
    lp = torch.log_softmax(torch.from_numpy(np.asarray(logits).reshape(len(ids), -1)[:-1]).double(), dim=-1)
    target = torch.from_numpy(ids[1:]).long()
    nll = -lp.gather(1, target[:, None]).mean().item()
    return nll, lp.argmax(dim=-1).tolist()


def score(run: Callable[[np.ndarray], np.ndarray], windows: np.ndarray) -> dict[str, Any]:
    """Per-window NLL and top-1 predictions of ``run`` over ``windows``, and the time it took."""
    start, nll, top1 = time.perf_counter(), [], []
    for ids in windows:
        value, predicted = window_nll(run(ids[None]), ids)
        nll.append(value)
        top1.append(predicted)
    seconds = time.perf_counter() - start
    return {"nll": nll, "top1": top1, "seconds": seconds, "seconds_per_window": seconds / len(windows)}


def runner(
    backend: str, files: Sequence[Path], dq_off: bool = False
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """A function from ``(1, T)`` ids to logits in the backend's runtime, and the runtime's settings.

    OpenVINO compiles with FP32 inference precision, as the project's runtime does; its CPU plugin still
    quantizes activations to INT8 on the fly (groups of 32) in front of weight-compressed FullyConnected
    layers unless ``dq_off`` sets ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``.
    """
    if backend == "openvino":
        import openvino as ov

        xml = next(Path(f) for f in files if str(f).endswith(".xml"))
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if dq_off:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = "0"
        compiled = ov.Core().compile_model(str(xml), "CPU", config)
        request = compiled.create_infer_request()
        settings = dict(config)
        for prop in ("INFERENCE_NUM_THREADS", "DYNAMIC_QUANTIZATION_GROUP_SIZE"):
            try:
                settings[prop] = str(compiled.get_property(prop))
            except Exception as err:  # noqa: BLE001 - a property this plugin lacks is recorded, not fatal
                settings[prop] = f"unavailable ({type(err).__name__})"

        def run_ov(ids: np.ndarray) -> np.ndarray:
            request.infer({0: ids})
            return request.get_output_tensor(0).data.copy()

        return run_ov, settings
    if backend == "executorch":
        from xsam_edge.backends.executorch.export import load_program
        from xsam_edge.backends.executorch.pack import data_file

        method = load_program(files[0], data_file(files)).load_method("forward")  # [.pte, its .ptd]
        return (lambda ids: method.execute([torch.from_numpy(ids)])[0].numpy()), {"delegate": "XNNPACK"}
    import onnxruntime as ort

    model = next(Path(f) for f in files if str(f).endswith(".onnx"))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda ids: session.run(None, {name: ids})[0]), {"providers": "CPUExecutionProvider"}


def signature(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256(ARTEFACTS["llm"].sha256.encode())
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def quantize_once(
    folder: Path,
    model: Any,
    backend: str,
    table: dict[str, Any],
    calibration: list[list[np.ndarray]],
    holdout: list[list[np.ndarray]],
    window: int,
) -> dict[str, Any]:
    """``quantize_model`` into ``folder/model`` unless ``folder/quant.json`` says it is done; its record.

    The record names the scheme table and the package's code digest: files made by other code or settings
    under the same key are made again, not reused.
    """
    from xsam_edge.quantization.any_model import quantize_model
    from xsam_edge.quantization.quantize import code_digest

    marker = folder / "quant.json"
    done = read_json(marker)
    made_by = {"table": table, "code": code_digest()}
    same = done and {k: done.get(k) for k in made_by} == made_by
    if same and all(Path(f).is_file() for f in done["files"]):
        log(f"{backend} {folder.name}: quantized files cached")
        return {**done, "cached": True}
    for stale in folder.glob("eval-*.json"):
        stale.unlink()
    example = (torch.zeros(1, window, dtype=torch.int64),) if isinstance(model, torch.nn.Module) else ()
    start = time.perf_counter()
    result = quantize_model(
        model,
        backend,
        table,
        folder / "model",
        name="model",
        example_inputs=example,
        calibration=calibration if table.get("data_aware") else (),
        holdout=holdout,
    )
    record = {
        "files": [str(f) for f in result.files],
        "wall_seconds": time.perf_counter() - start,
        "report": result.report.to_dict(),
        "worst_cosine": result.report.worst_cosine,
        "made": datetime.datetime.now().isoformat(timespec="seconds"),
        **made_by,
    }
    atomic_json(marker, record)
    return record


def evaluate_once(
    folder: Path, backend: str, files: list[str], windows: np.ndarray, sig: str, dq_off: bool = False
) -> dict:
    """The per-window scores of the files in ``folder`` (cached per evaluation set and runtime setting)."""
    cache = folder / f"eval-{sig}{'-dq0' if dq_off else ''}.json"
    done = read_json(cache)
    if done:
        log(f"{backend} {folder.name}: evaluation cached")
        return {**done, "cached": True}
    run, settings = runner(backend, [Path(f) for f in files], dq_off)
    result = {**score(run, windows), "runtime": settings}
    atomic_json(cache, result)
    return result


def paired(nll: Sequence[float], ref: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Δ% of perplexity against ``ref``: overall, per-window spread and a paired bootstrap 95 % CI."""
    d = np.asarray(nll) - np.asarray(ref)
    per_window = 100 * np.expm1(d)
    rng = np.random.default_rng(seed)
    boot = 100 * np.expm1(d[rng.integers(0, len(d), size=(BOOTSTRAP, len(d)))].mean(axis=1))
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "delta_pct": float(100 * math.expm1(d.mean())),
        "window_delta_pct": {
            "min": float(per_window.min()),
            "median": float(np.median(per_window)),
            "max": float(per_window.max()),
        },
        "ci95_pct": [float(low), float(high)],
        "per_window_delta_pct": [round(float(x), 4) for x in per_window],
    }


def goal(key: str, delta: dict[str, Any]) -> dict[str, Any] | None:
    """The issue's goal for this scheme and whether the point estimate and the CI's upper end meet it."""
    base = key.split()[0]
    kind = "int8" if base == "w8" else "int4" if base.startswith("w4") else None
    if kind is None:
        return None
    limit = GOALS[kind]
    return {
        "kind": kind,
        "limit_pct": limit,
        "met": delta["delta_pct"] <= limit,
        "ci_upper_within": delta["ci95_pct"][1] <= limit,
    }


def run_backend(
    backend: str,
    keys: list[str],
    model: Logits,
    data: dict[str, np.ndarray],
    work: Path,
    sig: str,
    dq_off: bool = False,
) -> dict[str, Any]:
    """Every scheme of ``keys`` on ``backend``: quantize (or reuse), evaluate, compare with its fp32."""
    calibration = [[w[None]] for w in data["calibration"]]
    holdout = [[w[None]] for w in data["holdout"]]
    window = data["eval"].shape[1]
    rows: dict[str, Any] = {}
    float_onnx: Path | None = None
    for key in ["fp32", *[k for k in keys if k != "fp32"]]:
        table, backends = SCHEMES[key]
        if backend not in backends:
            continue
        tag = f"-c{len(calibration)}" if table.get("data_aware") else ""
        folder = work / backend / f"{key}-t{window}{tag}"
        row: dict[str, Any] = {"backend": backend, "scheme": key, "table": table}
        try:
            if key != "fp32" and "error" in rows.get("fp32", {"error": ""}):
                raise RuntimeError("no float32 export on this backend to compare with")
            # ONNX quantizes the float32 file once exported; OpenVINO re-exports the module (an IR path is
            # not a model quantize_model takes)
            source: Any = float_onnx if backend == "onnx" and key != "fp32" else model
            log(f"{backend} {key}: quantize")
            quant = quantize_once(folder, source, backend, table, calibration, holdout, window)
            if backend == "onnx" and key == "fp32":
                float_onnx = next(Path(f) for f in quant["files"] if f.endswith(".onnx"))
            log(f"{backend} {key}: evaluate {len(data['eval'])} windows")
            scores = evaluate_once(folder, backend, quant["files"], data["eval"], sig)
            report = quant["report"]
            row.update(
                ppl=math.exp(float(np.mean(scores["nll"]))),
                nll=scores["nll"],
                top1=scores["top1"],
                eval_seconds_per_window=scores["seconds_per_window"],
                runtime=scores["runtime"],
                bytes_fp32=report["bytes_fp32"],
                bytes_quant=report["bytes_quant"],
                quantize_seconds=report["seconds"],
                quantize_wall_seconds=quant["wall_seconds"],
                worst_cosine_holdout=quant["worst_cosine"],
                fidelity=report["fidelity"],
                measured_on=report["measured_on"],
                notes=report["notes"],
                kept_float=report["kept_float"],
                quantized_ops=report["quantized"],
                integer_ops=report["integer_ops"],
                files=quant["files"],
                from_cache={"quantize": quant.get("cached", False), "eval": scores.get("cached", False)},
            )
            log(f"{backend} {key}: ppl {row['ppl']:.4f}")
        except Exception as err:  # noqa: BLE001 - one scheme failing is a result: recorded, the rest go on
            traceback.print_exc()
            row["error"] = f"{type(err).__name__}: {err}"[:3000]
            log(f"{backend} {key}: FAILED {row['error'][:300]}")
        rows[key] = row
        if dq_off and backend == "openvino" and key != "fp32" and "nll" in row:
            log(f"{backend} {key}: evaluate with dynamic activation quantization off")
            extra = evaluate_once(folder, backend, row["files"], data["eval"], sig, dq_off=True)
            rows[f"{key} (dq off)"] = {
                **row,
                "scheme": f"{key} (dq off)",
                "ppl": math.exp(float(np.mean(extra["nll"]))),
                "nll": extra["nll"],
                "top1": extra["top1"],
                "eval_seconds_per_window": extra["seconds_per_window"],
                "runtime": extra["runtime"],
                "from_cache": {**row["from_cache"], "eval": extra.get("cached", False)},
            }
    reference = rows.get("fp32", {})
    for key, row in rows.items():
        if "nll" in row and "nll" in reference:
            row.update(paired(row["nll"], reference["nll"]))
            pairs = zip(row["top1"], reference["top1"], strict=True)
            row["top1_agreement_with_float"] = float(np.mean([np.mean(np.equal(a, b)) for a, b in pairs]))
            row["goal"] = goal(key, row)
    return rows


def versions() -> dict[str, str]:
    names = ("torch", "transformers", "openvino", "nncf", "onnx", "onnxruntime", "gguf", "accelerate")
    names = (*names, "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return {"python": platform.python_version(), **found}


def fmt_ci(row: dict[str, Any]) -> str:
    low, high = row["ci95_pct"]
    return f"[{low:+.2f}, {high:+.2f}]"


def markdown(doc: dict[str, Any]) -> str:
    """The results as a Markdown table, the sanity check, each row's notes and the caveats."""
    lines = [
        f"# Real-weight LLM perplexity under quantization ({doc['date']})",
        "",
        f"`{doc['command']}` on {doc['machine']}; wall time {doc['wall_seconds'] / 60:.1f} min.",
        f"Model: {doc['model']['name']} ({doc['model']['parameters'] / 1e6:.0f} M parameters; "
        f"{doc['model']['licence']}). Evaluation: {doc['data']['eval_windows']} windows x "
        f"{doc['data']['window']} tokens of {doc['data']['eval_text']}; calibration (data-aware rows only): "
        f"{doc['data']['calibration_windows']} windows of {doc['data']['calibration_text']}.",
        "",
        "| backend | scheme | ppl | Δ% vs float | per-window Δ% min / median / max | 95 % CI of Δ% "
        "| top-1 agree | size MB (x smaller) | quantize s | worst cos (holdout) | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, rows in doc["results"].items():
        for key, row in rows.items():
            if "error" in row:
                lines.append(f"| {backend} | {key} | failed: {row['error'][:160]} |  |  |  |  |  |  |  |  |")
                continue
            w = row.get("window_delta_pct", {})
            spread = f"{w['min']:+.2f} / {w['median']:+.2f} / {w['max']:+.2f}" if w else ""
            g = row.get("goal")
            verdict = ""
            if g:
                verdict = f"≤ +{g['limit_pct']:g} %: " + ("met" if g["met"] else "MISSED")
                verdict += " (CI inside)" if g["ci_upper_within"] else " (CI crosses)" if g["met"] else ""
            size = f"{row['bytes_quant'] / 1e6:.0f} ({row['bytes_fp32'] / max(row['bytes_quant'], 1):.2f})"
            ci = fmt_ci(row) if "ci95_pct" in row else ""
            agree = row.get("top1_agreement_with_float", 1.0)
            lines.append(
                f"| {backend} | {key} | {row['ppl']:.3f} | {row.get('delta_pct', 0):+.2f} | {spread} | {ci} "
                f"| {agree:.3f} | {size} | {row['quantize_wall_seconds']:.0f} "
                f"| {row['worst_cosine_holdout']:.5f} | {verdict} |"
            )
    eager = doc["eager"]
    lines += ["", f"PyTorch eager float32: ppl {eager['ppl']:.4f}."]
    for backend, check in doc["sanity"].items():
        lines.append(
            f"{backend} fp32 vs eager: Δ {check['delta_pct']:+.4f} %, largest per-window |ΔNLL| "
            f"{check['max_abs_window_nll_diff']:.2e}."
        )
    for backend, reason in doc.get("skipped", {}).items():
        lines.append(f"{backend}: not run ({reason}).")
    lines += ["", "Notes from the quantizer:", ""]
    for backend, rows in doc["results"].items():
        for key, row in rows.items():
            notes = row.get("notes") or []
            kept = row.get("kept_float") or []
            if notes or kept:
                more = [f"… {len(kept) - 3} more left float"] if len(kept) > 3 else []
                said = [*notes, *(f"left float: {k}" for k in kept[:3]), *more]
                lines.append(f"- {backend} {key}: " + "; ".join(said))
    lines += ["", "Caveats:", "", *[f"- {c}" for c in doc["caveats"]], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=WINDOWS, help="evaluation windows")
    parser.add_argument("--window", type=int, default=WINDOW, help="tokens per window")
    parser.add_argument("--calibration", type=int, default=CALIBRATION, help="pydoc windows (data-aware)")
    parser.add_argument("--backends", default="openvino,onnx")
    parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES), help=f"of {', '.join(SCHEMES)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the .json and .md")
    parser.add_argument("--work", type=Path, default=None, help="cache (default $XSAM_EDGE_TESTBED/work/llm)")
    parser.add_argument(
        "--eval-text",
        choices=("lee", "pydoc"),
        default="lee",
        help="evaluate on the Lee news corpus (held-out text) or on pydoc windows kept out of calibration",
    )
    parser.add_argument("--tag", default="", help="suffix of the results files' names")
    parser.add_argument(
        "--tied",
        action="store_true",
        help="tie the input embedding to the head (one table, as the model was trained); cached apart",
    )
    parser.add_argument(
        "--dq-off",
        action="store_true",
        help="also run each OpenVINO result with the CPU plugin's dynamic activation quantization off",
    )
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    backends = [b for b in args.backends.split(",") if b]
    keys = [k for k in args.schemes.split(",") if k]
    known = ("openvino", "onnx", "executorch")
    unknown = [k for k in keys if k not in SCHEMES] + [b for b in backends if b not in known]
    if unknown:
        parser.error(f"unknown scheme(s) or backend(s): {', '.join(unknown)}")
    work = args.work or cache_dir() / "work" / ("llm-tied" if args.tied else "llm")
    paths = fetch(("llm", "text"))
    log("loading the GGUF model (dequantized to float32)" + (", one table tied" if args.tied else ""))
    tokenizer, model = load_model(paths["llm"], tied=args.tied)
    lee = chunks(tokenizer, (paths["text"] / "lee_background.cor").read_text(encoding="utf-8"), args.window)
    pydoc = chunks(tokenizer, calibration_text(), args.window)
    calib_index = spaced(args.calibration, len(pydoc))
    if args.eval_text == "lee":
        eval_index = spaced(args.windows, len(lee) - HOLDOUT)
        eval_windows = lee[eval_index]
        eval_text = (
            f"lee_background.cor ({ARTEFACTS['text'].licence}), {len(lee)} windows, evenly spaced ones of "
            f"the first {len(lee) - HOLDOUT}"
        )
    else:  # the calibration text's other windows: in-distribution for the data-aware schemes
        rest = [i for i in range(len(pydoc)) if i not in set(calib_index)]
        eval_index = [rest[i] for i in spaced(args.windows, len(rest))]
        eval_windows = pydoc[eval_index]
        eval_text = f"pydoc_data.topics, {len(pydoc)} windows, evenly spaced ones not used for calibration"
    data = {"eval": eval_windows, "holdout": lee[-HOLDOUT:], "calibration": pydoc[calib_index]}
    sig = signature(data["eval"])
    eager_cache = work / f"eager-{sig}.json"
    eager = read_json(eager_cache)
    if eager is None:
        log(f"PyTorch eager float32 on {len(eval_index)} windows")
        with torch.inference_mode():
            eager = score(lambda ids: model(torch.from_numpy(ids)).numpy(), data["eval"])
        atomic_json(eager_cache, eager)
    eager["ppl"] = math.exp(float(np.mean(eager["nll"])))
    results, sanity = {}, {}
    for backend in backends:
        results[backend] = run_backend(backend, keys, model, data, work, sig, args.dq_off)
        fp32 = results[backend].get("fp32", {})
        if "nll" in fp32:
            diff = np.abs(np.asarray(fp32["nll"]) - np.asarray(eager["nll"]))
            sanity[backend] = {
                "delta_pct": paired(fp32["nll"], eager["nll"])["delta_pct"],
                "max_abs_window_nll_diff": float(diff.max()),
            }
    params = sum(p.numel() for p in model.parameters())
    date = datetime.date.today().isoformat()
    doc = {
        "date": date,
        "command": " ".join(["python -m benchmarks.real_weights.llm", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "versions": versions(),
        "model": {
            "name": "Qwen2.5-Coder-0.5B-Instruct (GGUF, dequantized to float32)",
            "file": GGUF,
            "sha256": ARTEFACTS["llm"].sha256,
            "packages": list(ARTEFACTS["llm"].packages),
            "licence": ARTEFACTS["llm"].licence,
            "parameters": params,
            "tie_word_embeddings": bool(model.lm.config.tie_word_embeddings),
            "attn_implementation": "eager",
        },
        "data": {
            "window": args.window,
            "eval_windows": len(eval_index),
            "eval_text": eval_text,
            "eval_window_index": eval_index,
            "holdout": f"the last {HOLDOUT} lee windows (quantize_model's fidelity report only)",
            "calibration_windows": len(data["calibration"]),
            "calibration_text": "Python's pydoc_data.topics (PSF), keys sorted, joined",
            "calibration_window_index": calib_index,
            "eval_signature": sig,
        },
        "goals_pct": GOALS,
        "bootstrap": {"resamples": BOOTSTRAP, "seed": 0, "unit": "window, paired"},
        "eager": {k: v for k, v in eager.items() if k != "top1"},
        "sanity": sanity,
        "results": {
            b: {k: {x: v for x, v in r.items() if x != "top1"} for k, r in rows.items()}
            for b, rows in results.items()
        },
        "caveats": [*CAVEATS, *([TIED_CAVEAT] if args.tied else [])],
        "wall_seconds": time.perf_counter() - wall,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"real-weights-llm-{date}{'-' + args.tag if args.tag else ''}"
    atomic_json(stem.with_suffix(".json"), doc)
    table = markdown(doc)
    write_text(stem.with_suffix(".md"), table)
    print(table)
    log(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
