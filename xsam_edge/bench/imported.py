"""Bench documents measured elsewhere (``xsam_runner bench`` on a phone), read for the report.

The runner writes the harness's schema (``BENCH_FORMAT`` version ``BENCH_VERSION``); this checks what the
report reads, so a truncated or foreign file fails here with its name, not as a ``KeyError`` in the table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .harness import BENCH_FORMAT, BENCH_VERSION

# what ``report.markdown_table`` / ``graph_table`` read from every result
_REQUIRED = {
    "label": (),
    "backend": (),
    "size": ("bundle_bytes",),
    "memory": ("peak_rss_bytes",),
    "latency": ("load_s", "first_query", "next_query", "stages_ms_per_query", "graphs"),
    "accuracy": ("primary", "drop", "graph_psnr", "flagged_graphs", "nonfinite_outputs", "mask_agreement"),
    "placement": (),
}


def load_bench_results(path: str | os.PathLike) -> list[dict]:
    """The results of a bench JSON file (``{"results": [...]}`` or a single result document).

    Args:
        path (str | os.PathLike): a file written by ``xsam_runner bench`` (or ``xsam-edge bench --json``).

    Returns:
        list[dict]: the result documents, ready for ``report.markdown_table``.

    Raises:
        ValueError: unreadable JSON, another format or a newer version, or a result missing a field the
            report reads (the message names the file and the field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"bench file {path} is unreadable: {err}") from err
    results = data.get("results", [data]) if isinstance(data, dict) else None
    if not isinstance(results, list) or not results:
        raise ValueError(f"bench file {path} holds no results")
    for i, result in enumerate(results):
        where = f"bench file {path}, result {i}"
        if not isinstance(result, dict) or result.get("format") != BENCH_FORMAT:
            raise ValueError(f"{where} is not an {BENCH_FORMAT} document")
        if int(result.get("version", 0)) > BENCH_VERSION:
            raise ValueError(f"{where} has version {result['version']}, newer than this xsam_edge reads")
        for section, keys in _REQUIRED.items():
            if section not in result:
                raise ValueError(f"{where} lacks '{section}'")
            missing = [k for k in keys if k not in result[section]]
            if missing:
                raise ValueError(f"{where} lacks {section}.{', '.join(missing)}")
    return results
