"""Where an ExecuTorch program spends its time, per op kind, and an A/B of two programs of the same graph.

Run: ``python -m benchmarks.executorch_profile profile PROGRAM.pte [--method forward] [--runs 4]
[--out PATH]`` or ``python -m benchmarks.executorch_profile ab BEFORE.pte AFTER.pte [--method forward]
[--rounds 11] [--out PATH]``.

``profile`` runs the method with ETDump on and sums the median time of each event kind: portable kernels
(``native_call_<op>``) and, inside XNNPACK delegates, each XNNPACK operator (``Fully Connected``, ``Static
Reshape`` ...), which is how the copies that compute nothing were found (docs/results/students.md). ``ab``
runs the two programs in alternating rounds (the first warms up) and reports median, min and max of each,
plus the largest output difference. Inputs are random, of the method's own shapes and dtypes (integer inputs
count up from 0, as positions do). Writes JSON; no thresholds: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from xsam_edge.files import atomic_write_text

_INTEGER_DTYPES = {3: "int32", 4: "int64"}  # ExecuTorch ScalarType codes of the position inputs


def method_inputs(program: Any, method: str, seed: int = 0) -> list:
    """Random float inputs of ``method``'s shapes; integer inputs count up from 0 (positions)."""
    import torch

    meta = program.method_meta(method)
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for i in range(meta.num_inputs()):
        info = meta.input_tensor_meta(i)
        shape = tuple(info.sizes())
        dtype = _INTEGER_DTYPES.get(int(info.dtype()))
        if dtype is None:
            inputs.append(torch.randn(shape, generator=generator))
        else:
            inputs.append(torch.arange(int(np.prod(shape)), dtype=getattr(torch, dtype)).reshape(shape))
    return inputs


def profile(path: str | Path, method: str = "forward", runs: int = 4, data: str | Path | None = None) -> dict:
    """Per event kind: total of each event's median over ``runs`` (the first run dropped), and its count.

    ``data``: the ``.ptd`` a program of a tied bundle reads its table from (``executorch/llm.ptd``).
    """
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    if runs < 2:
        raise ValueError(f"runs must be at least 2 (the first is dropped), got {runs}")
    program = _load_for_executorch(str(path), _path(data), enable_etdump=True, debug_buffer_size=0)
    inputs = method_inputs(program, method)
    for _ in range(runs):
        program.run_method(method, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdp"
        program.write_etdump_result_to_file(str(etdump))
        inspector = Inspector(etdump_path=str(etdump))
    total: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None:
                continue
            kept = sorted(event.perf_data.raw[1:])
            kind = event.name.split(" #")[0]  # XNNPACK numbers its operators: "Static Reshape (NC) #3"
            total[kind] += kept[len(kept) // 2]
            count[kind] += 1
    kinds = sorted(total, key=lambda k: -total[k])
    return {
        "program": str(path),
        "method": method,
        "runs": runs,
        "ms": {k: round(total[k], 3) for k in kinds},
        "count": {k: count[k] for k in kinds},
    }


def ab(
    before: str | Path,
    after: str | Path,
    method: str = "forward",
    rounds: int = 11,
    data: tuple[str | Path | None, str | Path | None] = (None, None),
) -> dict:
    """Both programs in alternating rounds on the same inputs: time of each and the largest difference.

    ``data``: each program's ``.ptd``, where it has one (as ``profile``).
    """
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (the first warms up), got {rounds}")
    programs = {
        "before": _load_for_executorch(str(before), _path(data[0])),
        "after": _load_for_executorch(str(after), _path(data[1])),
    }
    inputs = method_inputs(programs["before"], method)
    times: dict[str, list[float]] = {name: [] for name in programs}
    outputs: dict[str, list] = {}
    for r in range(rounds):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            start = time.perf_counter()
            outputs[name] = programs[name].run_method(method, inputs)
            if r:
                times[name].append((time.perf_counter() - start) * 1e3)
    diff = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(*outputs.values(), strict=True))
    return {
        "before": str(before),
        "after": str(after),
        "method": method,
        "rounds": rounds,
        "ms": {n: {"median": float(np.median(v)), "min": min(v), "max": max(v)} for n, v in times.items()},
        "max_abs_diff": diff,
    }


def _path(data: str | Path | None) -> str | None:
    return None if data is None else str(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    one = verbs.add_parser("profile")
    one.add_argument("program")
    one.add_argument("--runs", type=int, default=4)
    one.add_argument("--data", help="the .ptd the program reads a tied table from (executorch/llm.ptd)")
    two = verbs.add_parser("ab")
    two.add_argument("before")
    two.add_argument("after")
    two.add_argument("--rounds", type=int, default=11)
    two.add_argument("--data-before", help="the before program's .ptd, if it has one")
    two.add_argument("--data-after", help="the after program's .ptd, if it has one")
    for verb in (one, two):
        verb.add_argument("--method", default="forward")
        verb.add_argument("--out", help="results JSON (default: printed only)")
    args = parser.parse_args(argv)
    if args.verb == "profile":
        paths = (args.program, args.data)
    else:
        paths = (args.before, args.after, args.data_before, args.data_after)
    for path in paths:
        if path is not None and not Path(path).is_file():
            parser.error(f"no file {path}")
    if args.verb == "profile":
        result = profile(args.program, args.method, args.runs, args.data)
        for kind, ms in list(result["ms"].items())[:25]:
            print(f"{kind:50s} {ms:9.1f} ms  x{result['count'][kind]}")
    else:
        result = ab(args.before, args.after, args.method, args.rounds, (args.data_before, args.data_after))
        for name, ms in result["ms"].items():
            print(f"{name}: median {ms['median']:.1f} ms ({ms['min']:.1f}-{ms['max']:.1f})")
        print(f"max |diff| {result['max_abs_diff']:.3g}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
