"""Bench results as a table (one row per bundle and backend, like ``yolo benchmark``) and as PNG plots.

Reads the documents ``harness.bench`` returns; plots need matplotlib (without it the report says so and the
table is still written).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_MB = 1e6


def _cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown_table(results: list[dict]) -> str:
    """One row per result: size, accuracy against the reference, latency, memory, graph flags."""
    tasks = sorted({t for r in results for t in r["accuracy"]["primary"]})
    head = (
        ["model", "backend", "size MB"]
        + [f"{t} Δ" for t in tasks]
        + ["mask IoU vs ref", "first query ms", "next query ms", "load s", "peak RSS MB", "worst graph dB"]
        + ["flags"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        acc, lat = r["accuracy"], r["latency"]
        drops = [acc["drop"].get(t) for t in tasks]
        psnrs = [g["min_psnr_db"] for g in acc["graph_psnr"].values() if g["min_psnr_db"] is not None]
        worst = min(psnrs) if psnrs else (float("inf") if acc["graph_psnr"] else None)
        flags = []
        if acc["flagged_graphs"]:
            flags.append(f"PSNR<{acc['psnr_flag_db']:g}: {', '.join(acc['flagged_graphs'])}")
        if acc["nonfinite_outputs"]:
            flags.append("non-finite: " + ", ".join(acc["nonfinite_outputs"]))
        row = (
            [r["label"], r["backend"], f"{r['size']['bundle_bytes'] / _MB:.2f}"]
            + [_cell(None if d is None else round(-d, 2) + 0.0, "+.2f") for d in drops]  # + 0.0: no "-0.00"
            + [
                _cell(acc["mask_agreement"].get("matched_miou"), ".1f"),
                f"{lat['first_query']['p50_ms']:.1f}",
                f"{lat['next_query']['p50_ms']:.1f}",
                f"{lat['load_s']:.2f}",
                f"{r['memory']['peak_rss_bytes'] / _MB:.0f}",
                "identical" if worst == float("inf") else _cell(worst, ".1f"),
                "; ".join(flags) or "–",
            ]
        )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def graph_table(result: dict) -> str:
    """Per graph of one result: p50 / p90, PSNR on the golden traces, placement share, roofline fraction."""
    roof = result.get("roofline", {}).get("graphs", {})
    head = ["graph", "p50 ms", "p90 ms", "calls", "PSNR dB", "placement", "roofline"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    psnrs = result["accuracy"]["graph_psnr"]
    placement = result["placement"]
    # timed names → manifest names: ``llm`` (ExecuTorch), ``llm_prefill`` (OpenVINO) or the KV-I/O pair
    aliases = {
        "llm_prefill": ("llm", "llm_prefill", "llm_kvio_prefill"),
        "llm_decode": ("llm", "llm_prefill", "llm_kvio_decode"),
    }
    for name, stats in result["latency"]["graphs"].items():
        names = aliases.get(name, (name,))
        psnr = psnrs.get("llm" if name.startswith("llm") else name)
        place = next((placement[a] for a in names if a in placement), None)
        fraction = (
            next((roof[a]["fraction"] for a in names if a in roof), None) if name != "llm_decode" else None
        )
        if psnr is None:
            psnr_cell = "–"
        else:
            psnr_cell = "identical" if psnr["min_psnr_db"] is None else f"{psnr['min_psnr_db']:.1f}"
        place_cell = "–" if not place or place["share"] is None else f"{place['share']:.0%} ({place['kind']})"
        roof_cell = "–" if fraction is None else f"{fraction * 100:.1f} %"
        lines.append(
            f"| {name} | {stats['p50_ms']:.2f} | {stats['p90_ms']:.2f} | {stats['n']} | {psnr_cell} | "
            f"{place_cell} | {roof_cell} |"
        )
    return "\n".join(lines)


def write_plots(results: list[dict], out_dir: str | Path) -> list[Path]:
    """Accuracy vs latency, bundle sizes, and per-stage latency stacks; ``[]`` without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None or not results:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{r['label']}\n{r['backend']}" for r in results]
    files = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for r, name in zip(results, names, strict=True):
        iou = r["accuracy"]["mask_agreement"].get("matched_miou")
        ax.scatter(r["latency"]["first_query"]["p50_ms"], iou if iou is not None else 0)
        ax.annotate(name.replace("\n", " / "), (r["latency"]["first_query"]["p50_ms"], iou or 0), fontsize=7)
    ax.set_xlabel("first query p50 (ms)")
    ax.set_ylabel("mask IoU vs reference (%)")
    ax.set_title("accuracy vs latency")
    files.append(_save(fig, out / "accuracy_vs_latency.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(range(len(results)), [r["size"]["bundle_bytes"] / _MB for r in results])
    ax.set_xticks(range(len(results)), names, fontsize=7)
    ax.set_ylabel("bundle size (MB)")
    ax.set_title("size on disk")
    files.append(_save(fig, out / "sizes.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = [0.0] * len(results)
    stages = list(results[0]["latency"]["stages_ms_per_query"])
    for stage in stages:
        values = [r["latency"]["stages_ms_per_query"].get(stage, 0.0) for r in results]
        ax.bar(range(len(results)), values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(results)), names, fontsize=7)
    ax.set_ylabel("ms per query (mean of first and next)")
    ax.set_title("latency by stage")
    ax.legend(fontsize=7)
    files.append(_save(fig, out / "stages.png"))
    return files


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
