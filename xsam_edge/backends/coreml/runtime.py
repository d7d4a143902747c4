"""Core ML backend: ``.mlpackage`` ML programs run by Core ML through coremltools (macOS only).

Each graph is one ``MLModel`` loaded with the profile's compute units (``CPU_ONLY``, ``CPU_AND_GPU``,
``CPU_AND_NE``, ``ALL``). The LLM is the stateful multifunction package ``llm.mlpackage``: its ``prefill``
and ``decode`` functions are loaded as two models that share one state from ``make_state()`` (the K/V caches
``k_cache_{i}`` / ``v_cache_{i}``), which is coremltools' prefill/decode pattern. A tied ``embed`` is that
package's third function (its table is the head's, stored once: ``pack.join_tied_embed``). Snapshots of the
cache after the image prefix go through ``MLState.read_state`` / ``write_state``.

Linux has no Core ML runtime (the coremltools wheel lacks ``libcoremlpython``), so there the backend refuses
at construction and says why; nothing is faked.
"""

from __future__ import annotations

import importlib
import platform
from typing import Any

import numpy as np

from xsam_edge.runtime.protocol import GraphRunner, LLMRunner
from xsam_edge.spec.bundle import GraphEntry, Manifest

COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")
LLM_FUNCTIONS = ("prefill", "decode")  # the multifunction package's functions (coreml.pack.LLM_FUNCTIONS)
PREDICT_SKIP_REASON = "Core ML prediction needs macOS"  # as export.coreml says it


def _feed(specs: list[dict], inputs: tuple[np.ndarray, ...], name: str) -> dict[str, np.ndarray]:
    """Named inputs as the package declares them: int32 for integers (Core ML has no int64), else fp32."""
    if len(inputs) != len(specs):
        raise ValueError(f"Core ML graph {name!r} takes {len(specs)} inputs, got {len(inputs)}")
    feed = {}
    for spec, x in zip(specs, inputs, strict=True):
        integer = np.dtype(spec["dtype"]).kind in "iu"
        feed[spec["name"]] = np.ascontiguousarray(x, dtype=np.int32 if integer else np.float32)
    return feed


class _CoreMLGraph:
    """One package (or one function of a multifunction package) called with the manifest's inputs."""

    def __init__(self, model: Any, name: str, inputs: list[dict], outputs: list[dict]) -> None:
        self.model, self.name = model, name
        self.inputs, self.outputs = inputs, [o["name"] for o in outputs]

    def run(self, *inputs: np.ndarray, state: Any = None) -> list[np.ndarray]:
        feed = _feed(self.inputs, inputs, self.name)
        got = self.model.predict(feed) if state is None else self.model.predict(feed, state=state)
        return [np.asarray(got[n], dtype=np.float32) for n in self.outputs]


class _CoreMLLLM:
    """Prefill and decode functions over one shared ``MLState`` (the K/V caches)."""

    def __init__(self, prefill: _CoreMLGraph, decode: _CoreMLGraph, state_names: list[str]) -> None:
        self.prefill, self.decode = prefill, decode
        self.state_names = state_names
        self.chunk = int(prefill.inputs[0]["shape"][1])  # the prefill function's fixed T
        self.pads_chunks = True
        self.reset()

    def reset(self) -> None:
        self.state = self.prefill.model.make_state()  # Core ML allocates the buffers zeroed

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        graph = self.decode if embeds.shape[1] == 1 else self.prefill
        projected, logits = graph.run(embeds, positions, state=self.state)
        return projected, logits

    def snapshot(self) -> Any:
        return {n: np.array(self.state.read_state(n), copy=True) for n in self.state_names}

    def restore(self, state: Any) -> None:
        for name, value in state.items():
            self.state.write_state(name, value.copy())


class CoreMLBackend:
    """Core ML packages on this Mac's compute units.

    Args:
        compute_units (str): one of ``COMPUTE_UNITS`` (the device profiles' ``coreml_compute_units``).

    Raises:
        RuntimeError: not macOS, or coremltools (with its native predict library) is missing.
        ValueError: unknown compute units.
    """

    name = "coreml"

    def __init__(self, compute_units: str = "ALL") -> None:
        if compute_units not in COMPUTE_UNITS:
            raise ValueError(
                f"compute_units must be one of {', '.join(COMPUTE_UNITS)}; got {compute_units!r}"
            )
        if platform.system() != "Darwin":
            raise RuntimeError(
                f"backend {self.name!r}: {PREDICT_SKIP_REASON} (coremltools cannot predict on "
                f"{platform.system()}); run it on a Mac: xsam-edge bench --device-profile apple-all"
            )
        try:
            self.ct = importlib.import_module("coremltools")
        except ImportError as err:
            raise RuntimeError(
                f"backend {self.name!r} needs the 'coremltools' package: pip install -c constraints.txt "
                "coremltools"
            ) from err
        if getattr(self.ct.models.model, "_MLModelProxy", None) is None:
            raise RuntimeError(
                f"backend {self.name!r}: this coremltools has no native predict library "
                "(libcoremlpython); install the macOS wheel of coremltools"
            )
        self.compute_units = compute_units

    def _load(self, manifest: Manifest, entry: GraphEntry, function: str | None = None) -> Any:
        units = getattr(self.ct.ComputeUnit, self.compute_units)
        path = str(manifest.path(entry.files[0]))
        return self.ct.models.MLModel(path, compute_units=units, function_name=function)

    def graph(self, manifest: Manifest, name: str) -> GraphRunner:
        """A graph's package, or its function of the LLM package (a tied ``embed`` is stored there)."""
        entry = manifest.graph(name, self.name)
        function = name if any(m["name"] == name for m in entry.methods) else None
        return _CoreMLGraph(self._load(manifest, entry, function), name, entry.inputs, entry.outputs)

    def llm(self, manifest: Manifest) -> LLMRunner:
        """The multifunction ``llm`` package: ``prefill`` and ``decode`` over one state."""
        entry = manifest.graph("llm", self.name)
        signatures = {m["name"]: m for m in entry.methods}
        missing = [f for f in LLM_FUNCTIONS if f not in signatures]
        if missing:
            raise RuntimeError(
                f"the bundle's coreml/llm package lacks the function(s) {', '.join(missing)}; re-export the "
                "bundle with this xsam_edge (xsam-edge export --backend coreml)"
            )
        prefill, decode = (
            _CoreMLGraph(self._load(manifest, entry, f), f, signatures[f]["inputs"], signatures[f]["outputs"])
            for f in LLM_FUNCTIONS
        )
        return _CoreMLLLM(prefill, decode, [s["name"] for s in entry.states])
