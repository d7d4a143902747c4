"""``xsam-edge bench``: a bundle on a backend against a golden reference (latency, memory, accuracy).

What one run measures (all in one JSON document, ``BENCH_FORMAT`` version ``BENCH_VERSION``):

- latency: model load; per graph and per stage p50 / p90 over every timed call; first query on a new image
  (encode + prefix prefill + query) and next query on the same image (the cached prefix); decode tokens/s for
  GCG and chat; host time (tokenizer, pre/post-processing) as what the graphs do not explain;
- memory: peak RSS of the process, bundle bytes on disk;
- accuracy: per-graph tensor PSNR on the golden traces (each graph fed the reference inputs; < 30 dB is
  flagged), task metrics against the ground truth next to the reference model's, mask agreement (IoU) with
  the reference model's masks, and every non-finite graph output counted;
- placement per graph (delegated share for ExecuTorch, fallback-risk ops for the others), the machine facts,
  and optionally each graph's roofline fraction.

No torch here: a bundle-only install (numpy + the backend's runtime) runs it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xsam_edge.bench.golden_set import GoldenError, GoldenSet, load_golden_set
from xsam_edge.export.placement import psnr
from xsam_edge.metrics.tasks import evaluate, mask_agreement, primary_metrics
from xsam_edge.quantization.fidelity import host_int8_saturates
from xsam_edge.runtime.observe import observe
from xsam_edge.runtime.session import EdgeSession
from xsam_edge.spec.bundle import TOKENIZER_FILE, GraphEntry, Manifest, load_bundle
from xsam_edge.spec.types import SegmentationResult

from .profiles import DeviceProfile, get_profile

BENCH_FORMAT = "xsam_edge-bench"
BENCH_VERSION = 1
PSNR_FLAG_DB = 30.0
STAGES = ("encode", "embed", "region", "prefill", "decode", "segment", "host")
_GRAPH_STAGE = {"encode_image": "encode", "embed": "embed", "region": "region", "segment": "segment"}


class GoldenMismatchError(ValueError):
    """The bundle was not made from the golden reference's model (nor distilled from it)."""


@dataclass(frozen=True)
class BenchOptions:
    """How long and how much to measure.

    Args:
        repeats (int): timed passes over the samples (the first also gives the accuracy).
        warmup (int): samples run untimed before the first pass (runtime and allocator warm-up).
        limit (int | None): at most this many golden samples.
        psnr_flag_db (float): a graph whose PSNR on the golden traces is below this is flagged.
        cross_model (bool): allow a golden made from another model (final masks and metrics only).
        roofline (bool): measure this machine's peaks and report each graph's achieved fraction.
    """

    repeats: int = 1
    warmup: int = 1
    limit: int | None = None
    psnr_flag_db: float = PSNR_FLAG_DB
    cross_model: bool = False
    roofline: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got {self.repeats} and {self.warmup}")


# -- instruments -----------------------------------------------------------------------------------
class _Clock:
    """Per-graph call times and non-finite counts; off while ``enabled`` is False (warm-up)."""

    def __init__(self) -> None:
        self.enabled = False
        self.calls: dict[str, list[float]] = {}
        self.nonfinite: dict[str, int] = {}
        self.decode_tokens = 0

    def __call__(
        self, name: str, inputs: list[np.ndarray], outputs: list[np.ndarray], seconds: float
    ) -> None:
        if name == "llm":
            name = "llm_decode" if inputs[0].shape[1] == 1 else "llm_prefill"
        bad = sum(
            int(not np.isfinite(o).all()) for o in outputs if np.issubdtype(np.asarray(o).dtype, np.floating)
        )
        if bad:
            self.nonfinite[name] = self.nonfinite.get(name, 0) + bad
        if self.enabled:
            self.calls.setdefault(name, []).append(seconds)
            self.decode_tokens += name == "llm_decode"


# -- checks ----------------------------------------------------------------------------------------
def model_relation(manifest: Manifest, golden: GoldenSet, cross_model: bool) -> str:
    """``same`` (graph PSNR applies), ``student`` (distilled from the golden's model) or ``other``.

    Raises:
        GoldenMismatchError: another model, unless ``cross_model``.
    """
    ours = manifest.source.get("fingerprint")
    theirs = golden.model.get("fingerprint")
    if ours and ours == theirs:
        return "same"
    if ours and manifest.source.get("teacher_fingerprint") == theirs:
        return "student"
    if cross_model:
        return "other"
    what = (
        f"model {manifest.source.get('name')!r} (weights {ours})"
        if ours
        else "a model it does not record (exported before bundle schema 3)"
    )
    raise GoldenMismatchError(
        f"the bundle was exported from {what}, but the golden reference holds the answers of model "
        f"{golden.model.get('name')!r} (weights {theirs}), and the bundle is not distilled from it; make a "
        "golden reference of the bundle's model (xsam-edge reference --model …), or pass --cross-model to "
        "compare final masks and metrics only"
    )


def graph_psnr(session: EdgeSession, golden: GoldenSet) -> dict[str, dict]:
    """Per graph, the lowest PSNR (dB) of any output of any call when fed the golden trace's inputs.

    The LLM replays each traced request's steps from a reset cache (its own cache carries on, as on a device).
    """
    worst: dict[str, list[float]] = {}
    runners, llm = session.engine.graphs, session.engine.llm
    for sample in golden.traced:
        llm.reset()
        for call in sample.trace:
            if call.graph == "llm":
                got = list(llm.step(*call.inputs))
            else:
                got = runners[call.graph].run(*call.inputs)
            values = [
                psnr(ref, out)
                for ref, out in zip(call.outputs, got, strict=True)
                if np.issubdtype(np.asarray(ref).dtype, np.floating)
            ]
            worst.setdefault(call.graph, []).extend(values)
    llm.reset()
    session.clear_image()
    return {
        name: {"min_psnr_db": _finite(min(values)), "outputs_compared": len(values)}
        for name, values in worst.items()
    }


def _finite(value: float) -> float | None:
    """JSON has no infinity: identical outputs (inf dB) are stored as ``None``."""
    return None if math.isinf(value) and value > 0 else float(value)


# -- facts -----------------------------------------------------------------------------------------
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts(threads: int) -> dict:
    """CPU model, cores, OS, Python and every runtime's version, and the thread count used."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    elif sys.platform == "darwin":
        cpu = platform.processor() or "Apple Silicon"
    runtimes = ("onnxruntime", "onnxruntime-gpu", "openvino", "executorch", "coremltools", "numpy", "torch")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "threads": threads,
        # ONNX Runtime's and OpenVINO's INT8 scores read lower on such a CPU than on a phone
        "int8_kernels_saturate": host_int8_saturates(),
        "runtimes": {p: v for p in runtimes if (v := _version(p))},
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image.

    On Linux ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` carries the parent's resident size at
    ``fork`` across ``exec``, so a measuring child of a big parent reported the parent's peak. Elsewhere
    ``ru_maxrss`` (bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def placement_summary(entry_placement: dict) -> dict:
    """Share of nodes in the delegate (ExecuTorch), or of ops without a known fallback risk (the others)."""
    methods = entry_placement.get("methods")
    if isinstance(methods, dict) and methods:
        delegated = sum(int(m.get("delegated_nodes", 0)) for m in methods.values())
        portable = sum(int(m.get("portable_nodes", 0)) for m in methods.values())
        total = delegated + portable
        return {
            "kind": "delegated_nodes",
            "share": delegated / total if total else None,
            "fallback_ops": sorted({op for m in methods.values() for op in m.get("portable_ops", {})}),
        }
    total = entry_placement.get("total_ops")
    if total:
        risky = sum(int(r.get("count", 0)) for r in entry_placement.get("risks", {}).values())
        return {
            "kind": "ops_without_fallback_risk",
            "share": 1.0 - risky / total,
            "fallback_ops": sorted(entry_placement.get("risks", {})),
        }
    return {"kind": "unknown", "share": None, "fallback_ops": []}


def _stats(values: list[float]) -> dict:
    ms = np.asarray(values) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "n": len(values),
    }


def _listed(relative: str, prefixes: set[str] | list[str]) -> bool:
    return any(relative == p or relative.startswith(p + "/") for p in prefixes)


def entry_bytes(manifest: Manifest, entry: GraphEntry) -> int:
    """Bytes on disk of the files a graph entry lists (a listed folder: every file under it)."""
    return sum(manifest.path(f).stat().st_size for f in manifest.files if _listed(f, entry.files))


def _bundle_bytes(manifest: Manifest, backend: str) -> int:
    prefixes = {f for g in manifest.graphs if g.backend == backend for f in g.files}
    return sum(
        manifest.path(relative).stat().st_size
        for relative in manifest.files
        if relative == TOKENIZER_FILE or _listed(relative, prefixes)
    )


# -- the run ---------------------------------------------------------------------------------------
def bench(
    bundle: str | os.PathLike,
    backend: str,
    golden: str | os.PathLike | GoldenSet,
    profile: str | DeviceProfile | None = None,
    options: BenchOptions | None = None,
    label: str | None = None,
) -> dict:
    """Measure ``bundle`` on ``backend`` against ``golden``.

    Args:
        bundle (str | os.PathLike): bundle folder.
        backend (str): one of the bundle's backends.
        golden (str | os.PathLike | GoldenSet): golden folder (``xsam-edge reference``) or a loaded one.
        profile (str | DeviceProfile | None): device profile (default: this machine's CPU profile).
        options (BenchOptions | None): repeats, warm-up, limit, thresholds.
        label (str | None): the row's name in tables and plots (default: the bundle's recipe or ``float``).

    Returns:
        dict: the result document (see the module doc).

    Raises:
        BundleError, GoldenError: unusable bundle or golden folder.
        GoldenMismatchError: the bundle is not of the golden's model (see ``BenchOptions.cross_model``).
        RuntimeError: the profile's runtime is missing here.
    """
    options = options or BenchOptions()
    device = profile if isinstance(profile, DeviceProfile) else get_profile(profile or "x86-cpu")
    runtime = device.runtime(backend)  # checks the runtime before any long work
    manifest = load_bundle(bundle)
    reference = golden if isinstance(golden, GoldenSet) else load_golden_set(golden)
    relation = model_relation(manifest, reference, options.cross_model)
    samples = reference.samples[: options.limit] if options.limit else reference.samples
    if not samples:
        raise GoldenError(f"golden reference {reference.root} holds no samples")

    start = time.perf_counter()
    session = EdgeSession(manifest, backend, runtime=runtime)
    load_s = time.perf_counter() - start

    psnr_skipped = None
    if relation != "same":
        psnr_skipped = f"the bundle's model is {relation}, not the golden's: graphs differ"
    elif reference.model.get("slots") != manifest.slots:
        psnr_skipped = (
            f"the golden traces were made with slots {reference.model.get('slots')}, the bundle has "
            f"{manifest.slots}; make the golden with the bundle's slots (xsam-edge reference --max-regions "
            "--max-conditions --prefill-len --max-seq) to compare graph by graph"
        )
    psnr_by_graph = graph_psnr(session, reference) if psnr_skipped is None else {}
    clock = _Clock()
    observe(session, clock)
    for sample in samples[: options.warmup]:
        session.clear_image()
        session.segment(sample.example.request)

    results: list[SegmentationResult] = []
    first, nxt, totals = [], [], []
    for repeat in range(options.repeats):
        for sample in samples:
            request = sample.example.request
            session.clear_image()
            clock.enabled = True
            t0 = time.perf_counter()
            result = session.segment(request)
            t1 = time.perf_counter()
            session.segment(request)  # same image: only the query's own tokens
            t2 = time.perf_counter()
            clock.enabled = False
            first.append(t1 - t0)
            nxt.append(t2 - t1)
            totals.append(t2 - t0)
            if repeat == 0:
                results.append(result)
    decode_s = sum(clock.calls.get("llm_decode", []))

    graphs = {name: _stats(times) for name, times in clock.calls.items()}
    stage_seconds = {stage: 0.0 for stage in STAGES}
    for name, times in clock.calls.items():
        stage = _GRAPH_STAGE.get(name) or ("decode" if name == "llm_decode" else "prefill")
        stage_seconds[stage] += sum(times)
    stage_seconds["host"] = max(sum(totals) - sum(stage_seconds.values()), 0.0)
    queries = 2 * len(totals)
    stages = {stage: seconds / queries * 1e3 for stage, seconds in stage_seconds.items()}

    examples = [s.example for s in samples]
    tasks = evaluate(list(zip(examples, results, strict=True)))
    reference_tasks = evaluate(list(zip(examples, [s.result for s in samples], strict=True)))
    ours, theirs = primary_metrics(tasks), primary_metrics(reference_tasks)
    flagged = sorted(
        name
        for name, g in psnr_by_graph.items()
        if g["min_psnr_db"] is not None and g["min_psnr_db"] < options.psnr_flag_db
    )

    placement = {}
    for entry in manifest.graphs:
        if entry.backend == backend:
            placement[entry.name] = {
                **placement_summary(entry.placement),
                "precision": entry.precision,
                "macs": entry.macs,
            }

    document = {
        "format": BENCH_FORMAT,
        "version": BENCH_VERSION,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "label": label or (manifest.quantization.get("recipe", {}).get("name") or "float"),
        "bundle": str(Path(manifest.root or bundle)),
        "backend": backend,
        "profile": device.to_dict(),
        "model": manifest.source,
        "golden": {
            "root": str(reference.root),
            "model": {k: reference.model.get(k) for k in ("name", "fingerprint")},
            "producer": reference.producer,
            "data": reference.data,
            "relation": relation,
            "samples": len(samples),
        },
        "machine": machine_facts(device.threads()),
        "size": {"bundle_bytes": _bundle_bytes(manifest, backend)},
        "memory": {"peak_rss_bytes": peak_rss_bytes()},
        "latency": {
            "load_s": load_s,
            "first_query": _stats(first),
            "next_query": _stats(nxt),
            "stages_ms_per_query": stages,
            "graphs": graphs,
            "decode_tokens_per_s": clock.decode_tokens / decode_s if decode_s > 0 else None,
            "decode_tokens": clock.decode_tokens,
        },
        "accuracy": {
            "graph_psnr": psnr_by_graph,
            "graph_psnr_skipped": psnr_skipped,
            "psnr_flag_db": options.psnr_flag_db,
            "flagged_graphs": flagged,
            "nonfinite_outputs": dict(clock.nonfinite),
            "tasks": tasks,
            "primary": ours,
            "reference_primary": theirs,
            "drop": {task: round(theirs[task] - ours[task], 4) for task in ours if task in theirs},
            "mask_agreement": mask_agreement(results, [s.result for s in samples]),
        },
        "placement": placement,
    }
    if options.roofline:
        document["roofline"] = _roofline(placement, graphs, manifest, backend, device.threads())
    return document


def _roofline(placement: dict, graphs: dict, manifest: Manifest, backend: str, threads: int) -> dict:
    from .roofline import graph_bytes, graph_roofline, measure_peak

    peak = measure_peak(threads)
    rows = {}
    timed_name = {"llm": "llm_prefill", "llm_prefill": "llm_prefill", "llm_kvio_prefill": "llm_prefill"}
    for entry in manifest.graphs:
        if entry.backend != backend or entry.name == "llm_kvio_decode" or not entry.macs:
            continue
        timed = graphs.get(timed_name.get(entry.name, entry.name))
        if not timed:
            continue
        moved = graph_bytes(entry_bytes(manifest, entry), entry.inputs + entry.outputs)
        int8 = entry.precision not in ("fp32", "fp16")
        rows[entry.name] = graph_roofline(entry.macs, moved, timed["p50_ms"] / 1e3, peak, int8=int8)
    return {"peak": peak.to_dict(), "graphs": rows}
