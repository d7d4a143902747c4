"""The Apple recipes' LLM schemes on the real small LLM, scored on Linux by replaying Core ML's weights.

Why: Core ML predicts only on macOS, so the apple-gpu (INT4 per block) and apple-ane (4-bit palettized)
recipes had no accuracy on real weights. Both compress weights only, so what a package computes differs
from its float source by the weights it decompresses to and by fp16 arithmetic. What: the float32 LLM of
``benchmarks.real_weights.llm`` (Qwen2.5-Coder-0.5B-Instruct from the test bed's GGUF) is converted once to an
fp16 Core ML package (``CoreMLQuantizer.export_float``), each scheme compresses that package as the
quantize stage does (``compress_package``), and its decompressed weights (``backends.coreml.weights``) go
back into the module (``quantization.replay.load_package_weights``), scored eagerly in fp32 arithmetic on the
same held-out Lee windows, paired window by window with the fp16 package replayed the same way.
The data-aware palettizations weigh their k-means (``backends.coreml.palettize``) by a sensitivity measured
on the 16 pydoc windows the data-aware schemes of ``benchmarks.real_weights.llm`` calibrate on: ``spal4``
by the next-token Fisher diagonal (SqueezeLLM; it needs labels), ``fpal4`` by the output sensitivity the
Core ML handler itself measures (``quantization.importance``), so ``fpal4`` is what a recipe ships.

Run: ``python -m benchmarks.real_weights.llm_coreml [--windows N] [--schemes fp16,w8,…] [--tied]``. Packages
and per-window results are cached under ``$XSAM_EDGE_TESTBED/work/llm-coreml[-tied]/``. Writes
``docs/results/data/real-weights-llm-coreml-<date>[-tied].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import RESULTS_DIR
from benchmarks.real_weights.common import (
    atomic_json,
    calibration_text,
    log,
    provenance,
    read_json,
    write_text,
)
from benchmarks.real_weights.fetch import ARTEFACTS, cache_dir, fetch
from benchmarks.real_weights.llm import (
    CALIBRATION,
    GGUF,
    HOLDOUT,
    WINDOW,
    WINDOWS,
    chunks,
    load_model,
    paired,
    score,
    spaced,
)

# key → scheme table (quantization.schemes), with the recipe whose LLM scheme it is
SCHEMES: dict[str, tuple[dict[str, Any], str]] = {
    "fp16": ({"scheme": "fp16"}, "the float export every Apple recipe starts from (the reference)"),
    "w8": ({"scheme": "w8"}, "per-channel INT8"),
    "w4-g32": (
        {"scheme": "w4", "group_size": 32},
        "apple-gpu's LLM: symmetric INT4 in blocks of 32, head INT8",
    ),
    "w4-g32-h4": ({"scheme": "w4", "group_size": 32, "head_bits": 4}, "apple-gpu's, the head at INT4 too"),
    "w4-g32-asym": (
        {"scheme": "w4", "group_size": 32, "symmetric": False},
        "asymmetric INT4, blocks of 32, head INT8",
    ),
    "w4-g32-r80": (
        {"scheme": "w4", "group_size": 32, "ratio": 0.8},
        "apple-gpu's, 20 % of the weights (INT4 error worst) at INT8",
    ),
    "pal4-g16": (
        {"scheme": "palettize", "nbits": 4, "group_size": 16},
        "apple-ane's LLM: 4-bit LUT per 16 rows",
    ),
    "pal6-g16": (
        {"scheme": "palettize", "nbits": 6, "group_size": 16},
        "6-bit LUT per 16 rows",
    ),
    "spal4-g16": (
        {"scheme": "palettize", "nbits": 4, "group_size": 16, "data_aware": True},
        "4-bit LUT per 16 rows, k-means weighted by the next-token Fisher diagonal (SqueezeLLM) "
        "of 16 pydoc windows",
    ),
    "fpal4-g16": (
        {"scheme": "palettize", "nbits": 4, "group_size": 16, "data_aware": True},
        "4-bit LUT per 16 rows, k-means weighted by the output sensitivity the quantize stage measures "
        "(quantization.importance) on 16 pydoc windows",
    ),
    "fpal4-g1": (
        {"scheme": "palettize", "nbits": 4, "group_size": 1, "data_aware": True},
        "4-bit LUT per row, weighted by the output sensitivity (a 32-byte table per row)",
    ),
    "fpal4-g16-r90-h8": (
        {"scheme": "palettize", "nbits": 4, "group_size": 16, "data_aware": True}
        | {"ratio": 0.9, "head_bits": 8},
        "the same, the head and the 10 % of the weights the tables resolve worst at INT8",
    ),
    "fpal4-g1-head": (
        {"scheme": "palettize", "nbits": 4, "group_size": 1, "data_aware": True},
        "4-bit LUT per row, the lookup table weighted as the X-SAM quantize stage can: by the head's "
        "sensitivity where tied, unweighted where not (its graph starts from the looked-up embeddings)",
    ),
    "fpal4-g1-head-lookup16": (
        {"scheme": "palettize", "nbits": 4, "group_size": 1, "data_aware": True},
        "fpal4-g1-head with the lookup reading the fp16 table (an fp16 embed package beside the LLM's)",
    ),
}
# data-aware schemes → the sensitivity their k-means weighs by: the model's own next-token loss (needs labels,
# benchmark only) or the labels-free output sensitivity the Core ML handler computes
SENSITIVITY = {
    "spal4-g16": "next-token",
    "fpal4-g16": "output",
    "fpal4-g1": "output",
    "fpal4-g16-r90-h8": "output",
    "fpal4-g1-head": "output-head",
}
# replay-only rows: another key's package, its lookup table replayed at fp16
LOOKUP_FP16 = {"fpal4-g1-head-lookup16": "fpal4-g1-head"}
ARITHMETIC = "fp32 (the packages compute in fp16 on Apple devices: not simulated)"


def calibration_windows(tokenizer: Any, window: int) -> np.ndarray:
    """The pydoc windows ``benchmarks.real_weights.llm`` calibrates its data-aware schemes on."""
    pydoc = chunks(tokenizer, calibration_text(), window)
    return pydoc[spaced(CALIBRATION, len(pydoc))]


def sensitivity(work: Path, kind: str, module: torch.nn.Module, calibration: np.ndarray) -> dict:
    """Per-weight sensitivity by torch.export name, ``next-token`` Fisher or ``output`` (cached)."""
    from xsam_edge.quantization.importance import fisher_diagonal, output_fisher

    cached = work / f"sensitivity-{kind}-{len(calibration)}x{calibration.shape[1]}.pt"
    if cached.is_file():
        return {k: v.numpy() for k, v in torch.load(cached, weights_only=True).items()}
    log(f"{kind} sensitivity on {len(calibration)} calibration windows")
    windows = [torch.from_numpy(c[None]) for c in calibration]
    if kind == "output":
        found = output_fisher(module, [(w,) for w in windows])
    elif kind == "output-head":
        found = output_fisher(HeadOnly(module), [(w,) for w in windows])
    else:

        def next_token_loss(m: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(m(ids)[0, :-1], ids[0, 1:])

        found = fisher_diagonal(module, windows, next_token_loss)
    torch.save({k: torch.from_numpy(v) for k, v in found.items()}, cached.with_suffix(".tmp"))
    cached.with_suffix(".tmp").replace(cached)
    return found


class HeadOnly(torch.nn.Module):
    """The LLM with its lookup reading a detached table: the sensitivity of the head role alone.

    As X-SAM's bundle splits them: its ``embed`` graph looks tokens up, and the LLM graph, whose outputs the
    quantize stage weighs by, starts from the embeddings. Parameter names are the wrapped model's.
    """

    def __init__(self, logits: torch.nn.Module) -> None:
        super().__init__()
        self.lm = logits.lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        table = self.lm.model.embed_tokens.weight.detach()
        embeds = torch.nn.functional.embedding(input_ids, table)
        return self.lm(inputs_embeds=embeds, use_cache=False).logits


def package(
    work: Path, key: str, module: torch.nn.Module, window: int, calibration: np.ndarray
) -> tuple[Path, float]:
    """The scheme's package under ``work/key`` (made from the fp16 export unless cached), and its seconds."""
    from xsam_edge.backends.coreml.quantize import CoreMLQuantizer, compress_package
    from xsam_edge.quantization.schemes import Float16, scheme_from_dict

    key = LOOKUP_FP16.get(key, key)
    out = work / key / "model.mlpackage"
    marker = work / key / "made.json"
    if read_json(marker) and out.is_dir():
        return out, read_json(marker)["seconds"]
    start = time.perf_counter()
    float_package = work / "fp16" / "model.mlpackage"
    if not float_package.is_dir():
        example = (torch.zeros(1, window, dtype=torch.int64),)
        CoreMLQuantizer().export_float(module, example, float_package.parent, "model", Float16())
    if key in SENSITIVITY:
        importance = sensitivity(work, SENSITIVITY[key], module, calibration)
        compress_package(float_package, out, scheme_from_dict(SCHEMES[key][0], key), importance=importance)
        del importance
    elif key != "fp16":
        compress_package(float_package, out, scheme_from_dict(SCHEMES[key][0], key))
    seconds = time.perf_counter() - start
    atomic_json(marker, {"seconds": seconds})
    return out, seconds


def replay_score(
    work: Path,
    key: str,
    pkg: Path,
    replayed: torch.nn.Module,
    windows: np.ndarray,
    lookup: torch.Tensor | None = None,
) -> dict:
    """Per-window NLL of ``pkg``'s decompressed weights in ``replayed`` (cached per evaluation set).

    ``lookup``: the input embedding reads this table instead (untied on a copy of ``replayed``).
    """
    from xsam_edge.backends.coreml.weights import package_weights
    from xsam_edge.quantization.replay import ReplayedGraph, load_package_weights

    cache = work / key / f"eval-{len(windows)}x{windows.shape[1]}.json"
    if read_json(cache):
        return read_json(cache)
    record = ReplayedGraph(key, str(pkg))
    load_package_weights(replayed, package_weights(pkg), record)
    if lookup is not None:
        replayed = copy.deepcopy(replayed)
        replayed.lm.model.embed_tokens.weight = torch.nn.Parameter(lookup.clone(), requires_grad=False)

    @torch.no_grad()
    def run(ids: np.ndarray) -> np.ndarray:
        return replayed(torch.from_numpy(ids)).numpy()

    result = {
        **score(run, windows),
        "replayed_parameters": record.parameters,
        "replayed_elements": record.elements,
    }
    atomic_json(cache, result)
    return result


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Core ML LLM schemes on Qwen2.5-Coder-0.5B (weights replayed) · {doc['date']} · {doc['machine']}",
        "",
        f"Evaluated on {doc['eval_windows']} held-out windows of {doc['window']} tokens; "
        f"arithmetic: {ARITHMETIC}.",
        "",
        "| scheme | what | package | perplexity | Δ vs fp16 package | 95 % CI | windows min / median / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in doc["rows"].items():
        d = row.get("vs_fp16")
        delta = "–" if d is None else f"{d['delta_pct']:+.2f} %"
        ci = "–" if d is None else f"[{d['ci95_pct'][0]:+.2f}, {d['ci95_pct'][1]:+.2f}]"
        spread = (
            "–" if d is None else "{min:+.1f} / {median:+.1f} / {max:+.1f} %".format(**d["window_delta_pct"])
        )
        lines.append(
            f"| {key} | {row['what']} | {row['package_mb']:.0f} MB | {row['perplexity']:.3f} | {delta} "
            f"| {ci} | {spread} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=WINDOWS, help="evaluation windows")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma list of {', '.join(SCHEMES)}")
    parser.add_argument("--tied", action="store_true", help="one table for the lookup and the head")
    parser.add_argument(
        "--out", help="results JSON (default docs/results/data/real-weights-llm-coreml-<date>)"
    )
    args = parser.parse_args(argv)
    keys = ["fp16"] + [k for k in args.schemes.split(",") if k and k != "fp16"]
    unknown = [k for k in keys if k not in SCHEMES]
    if unknown:
        raise SystemExit(f"unknown scheme(s) {', '.join(unknown)}; known: {', '.join(SCHEMES)}")
    paths = fetch(("llm", "text"))
    tokenizer, module = load_model(paths["llm"], tied=args.tied)
    lee = chunks(tokenizer, (paths["text"] / "lee_background.cor").read_text(encoding="utf-8"), WINDOW)
    windows = lee[spaced(args.windows, len(lee) - HOLDOUT)]  # the windows benchmarks.real_weights.llm scores
    calibration = calibration_windows(tokenizer, WINDOW)
    work = cache_dir() / "work" / ("llm-coreml-tied" if args.tied else "llm-coreml")
    replayed = copy.deepcopy(module).eval()  # every scheme's package overwrites the weights it stores
    rows: dict[str, Any] = {}
    for key in keys:
        log(f"coreml {key}")
        pkg, seconds = package(work, key, module, WINDOW, calibration)
        lookup = None
        size = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
        if key in LOOKUP_FP16:
            lookup = module.lm.model.embed_tokens.weight.detach().half().float()
            # the fp16 embed package beside the LLM's; untied, less the lookup's own 4-bit rows and tables
            entries, count = lookup.shape[0], lookup.numel()
            size += 2 * count - (0 if args.tied else count // 2 + 32 * entries)
        result = replay_score(work, key, pkg, replayed, windows, lookup)
        rows[key] = {
            "scheme": SCHEMES[key][0],
            "what": SCHEMES[key][1],
            "package_mb": size / 1e6,
            "make_seconds": seconds,
            "perplexity": float(np.exp(np.mean(result["nll"]))),
            "replayed_elements": result["replayed_elements"],
            "nll": result["nll"],
        }
        if key != "fp16":
            rows[key]["vs_fp16"] = paired(result["nll"], rows["fp16"]["nll"])
    doc = provenance("benchmarks.real_weights.llm_coreml", argv) | {
        "model": f"{GGUF} ({ARTEFACTS['llm'].licence}){', tied' if args.tied else ''}",
        "window": WINDOW,
        "eval_windows": len(windows),
        "arithmetic": ARITHMETIC,
        "rows": rows,
    }
    name = f"real-weights-llm-coreml-{doc['date']}{'-tied' if args.tied else ''}"
    out = Path(args.out) if args.out else RESULTS_DIR / f"{name}.json"
    atomic_json(out, doc)
    write_text(out.with_suffix(".md"), markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
