"""Recipes as values: per edge graph a scheme, for one backend, with its calibration set.

A ``Recipe`` maps graph names (``encode_image``, ``embed``, ``region``, ``llm``, ``segment``) to schemes,
with a default for graphs it does not name (torchao's ``ModuleFqnToConfig`` idea at graph granularity), plus
the name patterns kept in float everywhere (X-SAM's known-fragile parts). Named recipes cover the targets
users have; ``load_recipe`` also reads a user's TOML file:

.. code-block:: toml

    name = "my-phone"
    backend = "executorch"
    default = "fp32"
    keep_float = ["sampling_offsets", "attention_weights"]

    [calibration]
    data = "shapes:train"
    images = 8

    [graphs]
    encode_image = "w8a8"
    llm = { scheme = "8da4w", group_size = 64 }

    [float_layers]          # per graph, modules the accuracy budget found too sensitive to quantize
    llm = ["lm.blocks.0.down_proj"]

    [targets]               # per graph, the worst held-out sample's cosine to reach by layer fallback
    encode_image = 0.99

Everything is checked when the recipe is built (``validate`` for the backend's support matrix), so a bad
recipe fails before any export or calibration starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schemes import (
    Float16,
    Float32,
    Int4WeightOnly,
    Int8DynActInt4Weight,
    Int8Dynamic,
    Int8Static,
    Int8WeightOnly,
    Palettize,
    Scheme,
    scheme_from_dict,
)

__all__ = [
    "FRAGILE",
    "QUANT_GRAPHS",
    "RECIPES",
    "Calibration",
    "Recipe",
    "get_recipe",
    "load_recipe",
    "supported_schemes",
]

# the edge graphs a recipe can name ("llm" covers the backend's LLM files: KV-I/O pair, stateful IR, program)
QUANT_GRAPHS = ("encode_image", "embed", "region", "llm", "segment")

# module-name patterns kept in float by default (each with why): they decide *where* or *how sharply* the
# model looks, and a few LSBs there move masks, not just values
FRAGILE: tuple[str, ...] = (
    "sampling_offsets",  # deformable attention: offsets are sub-pixel sampling positions
    "attention_weights",  # deformable attention: softmax logits over sampling points
    "bg_embeds",  # the background class embedding of the cosine class head
)


def supported_schemes(backend: str) -> tuple[str, ...]:
    """The schemes ``backend``'s handler implements (its registry record's ``schemes``).

    Raises:
        ValueError: an unregistered backend (lists the registered ones).
    """
    from xsam_edge.backends import get_backend

    return get_backend(backend).schemes


@dataclass(frozen=True)
class Calibration:
    """Where calibration requests come from.

    Args:
        data (str): a dataset spec (``shapes:train``, ``coco_panoptic:…``); its requests run through the real
            FP32 session, and every graph records the inputs it sees.
        images (int): images to read; each brings all its task requests.
    """

    data: str = "shapes:train"
    images: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.images, int) or isinstance(self.images, bool) or self.images < 1:
            raise ValueError(
                f"calibration.images must be a positive int, got {self.images!r}: an empty calibration set "
                "cannot set activation ranges"
            )
        if not isinstance(self.data, str) or not self.data.strip():
            raise ValueError("calibration.data must name a dataset, e.g. 'shapes:train'")


@dataclass(frozen=True)
class Recipe:
    """One quantization recipe for one backend.

    Args:
        name (str): the recipe's name (stored in the bundle manifest).
        backend (str): ``executorch``, ``openvino``, ``onnx`` or ``coreml``.
        graphs (Mapping[str, Scheme]): graph name → scheme; graphs not named take ``default``.
        default (Scheme): the scheme of every graph not in ``graphs``.
        calibration (Calibration): the calibration set (used only when some scheme needs data).
        keep_float (tuple[str, ...]): module-name patterns left in float in every graph.
        description (str): one line for tables and ``--help``.
        float_layers (Mapping[str, tuple[str, ...]]): graph → module-name patterns left in float in that graph
            only (what a per-layer sensitivity pass chose; a graph's quantized part is cached per its own
            patterns, so adding one re-quantizes that graph alone).
        targets (Mapping[str, float]): graph → the cosine its worst held-out sample must reach; the graph's
            most sensitive layers are kept float, by measured rank, until it does (``fallback.py``).
    """

    name: str
    backend: str
    graphs: Mapping[str, Scheme] = field(default_factory=dict)
    default: Scheme = field(default_factory=Float32)
    calibration: Calibration = field(default_factory=Calibration)
    keep_float: tuple[str, ...] = FRAGILE
    description: str = ""
    float_layers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    targets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from xsam_edge.backends import backend_names

        known = backend_names()
        if self.backend not in known:
            raise ValueError(
                f"recipe {self.name!r}: unknown backend {self.backend!r}; backends: {', '.join(known)}"
            )
        supported = supported_schemes(self.backend)
        for table in ("graphs", "float_layers", "targets"):
            unknown = sorted(set(getattr(self, table)) - set(QUANT_GRAPHS))
            if unknown:
                raise ValueError(
                    f"recipe {self.name!r}: {table}: no graph named {', '.join(map(repr, unknown))}; "
                    f"graphs: {', '.join(QUANT_GRAPHS)}"
                )
        for graph, layers in self.float_layers.items():
            if isinstance(layers, str) or not all(isinstance(x, str) and x for x in layers):
                raise ValueError(
                    f"recipe {self.name!r}: float_layers.{graph} must be a list of module names, "
                    f"got {layers!r}"
                )
        for graph, target in self.targets.items():
            if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
                raise ValueError(
                    f"recipe {self.name!r}: targets.{graph} must be a cosine in (0, 1], got {target!r}"
                )
        for graph in QUANT_GRAPHS:
            scheme = self.scheme_for(graph)
            if not isinstance(scheme, Scheme):
                raise TypeError(f"recipe {self.name!r}: graphs.{graph} must be a Scheme, got {scheme!r}")
            if scheme.name not in supported:
                raise ValueError(
                    f"recipe {self.name!r}: scheme {scheme.name!r} for {graph} is not supported by "
                    f"{self.backend!r}; supported: {', '.join(supported)}"
                )
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        object.__setattr__(self, "graphs", dict(self.graphs))
        object.__setattr__(self, "float_layers", {g: tuple(v) for g, v in self.float_layers.items() if v})
        object.__setattr__(self, "targets", dict(self.targets))

    def scheme_for(self, graph: str) -> Scheme:
        """The scheme of ``graph`` (the default when the recipe does not name it)."""
        return self.graphs.get(graph, self.default)

    def keep_float_for(self, graph: str) -> tuple[str, ...]:
        """Module-name patterns left in float in ``graph``: the recipe-wide ones, then the graph's own."""
        return self.keep_float + tuple(self.float_layers.get(graph, ()))

    @property
    def calibrated(self) -> bool:
        """Whether any graph's scheme needs calibration data."""
        return any(self.scheme_for(g).calibrated for g in QUANT_GRAPHS)

    def with_schemes(self, overrides: Mapping[str, Scheme], suffix: str = "") -> Recipe:
        """A copy with some graphs' schemes replaced (the sensitivity pass and ``--max-drop`` use it)."""
        graphs = {g: self.scheme_for(g) for g in QUANT_GRAPHS} | dict(overrides)
        return dataclasses.replace(self, name=self.name + suffix, graphs=graphs)

    def with_float_layers(self, graph: str, layers: Sequence[str], suffix: str = "") -> Recipe:
        """A copy that also keeps ``layers`` (module names) of ``graph`` in float."""
        kept = tuple(dict.fromkeys((*self.float_layers.get(graph, ()), *layers)))
        return dataclasses.replace(
            self, name=self.name + suffix, float_layers={**self.float_layers, graph: kept}
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (manifest, TOML round trip)."""
        return {
            "name": self.name,
            "backend": self.backend,
            "description": self.description,
            "default": self.default.to_dict(),
            "graphs": {g: s.to_dict() for g, s in self.graphs.items()},
            "keep_float": list(self.keep_float),
            "float_layers": {g: list(v) for g, v in self.float_layers.items()},
            "targets": dict(self.targets),
            "calibration": {"data": self.calibration.data, "images": self.calibration.images},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "recipe") -> Recipe:
        """Build and validate a recipe from plain data (a parsed TOML file or a manifest).

        Raises:
            ValueError: a missing or unknown key, an unknown scheme, graph or backend, or a bad value.
        """
        data = dict(data)
        allowed = {
            "name",
            "backend",
            "description",
            "default",
            "graphs",
            "keep_float",
            "float_layers",
            "targets",
            "calibration",
        }
        extra = sorted(set(data) - allowed)
        if extra:
            known = ", ".join(sorted(allowed))
            raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}; keys: {known}")
        for key in ("name", "backend"):
            if key not in data:
                raise ValueError(f"{where}: missing {key!r}")
        graphs = data.get("graphs", {})
        if not isinstance(graphs, Mapping):
            raise ValueError(f"{where}: 'graphs' must be a table of graph = scheme")
        calibration = data.get("calibration", {})
        if not isinstance(calibration, Mapping):
            raise ValueError(f"{where}: 'calibration' must be a table with data and images")
        extra = sorted(set(calibration) - {"data", "images"})
        if extra:
            raise ValueError(f"{where}: calibration has no key(s) {', '.join(extra)}; keys: data, images")
        float_layers = data.get("float_layers", {})
        if not isinstance(float_layers, Mapping):
            raise ValueError(f"{where}: 'float_layers' must be a table of graph = [module names]")
        targets = data.get("targets", {})
        if not isinstance(targets, Mapping):
            raise ValueError(f"{where}: 'targets' must be a table of graph = worst-sample cosine")
        graph_schemes = {g: scheme_from_dict(s, f"{where}: graphs.{g}") for g, s in graphs.items()}
        default = scheme_from_dict(data.get("default", "fp32"), f"{where}: default")
        try:
            return cls(
                name=str(data["name"]),
                backend=str(data["backend"]),
                graphs=graph_schemes,
                default=default,
                calibration=Calibration(**calibration),
                keep_float=tuple(data.get("keep_float", FRAGILE)),
                description=str(data.get("description", "")),
                float_layers=dict(float_layers),
                targets=dict(targets),
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def _named() -> dict[str, Recipe]:
    w8a8 = Int8Static()
    # XNNPACK's dynamic INT8 (per-token activation scales): on the teacher every task within 1 point where
    # static W8A8 lost 7.8 (docs/results/quantization.md); 0.9986 on a real encoder where static gave 0.70
    w8a8_dynamic = Int8Dynamic()
    return {
        r.name: r
        for r in (
            Recipe(
                "android-xnnpack",
                "executorch",
                {
                    "encode_image": w8a8_dynamic,
                    "segment": w8a8_dynamic,
                    "embed": Int8WeightOnly(),
                    # the head and the 20 % of the other weights INT4 resolves worst at INT8: on a real
                    # 0.5 B LLM +5.1 % perplexity against +16.2 % for plain 8da4w, for 22 % more bytes
                    "llm": Int8DynActInt4Weight(head_bits=8, ratio=0.8),
                },
                description="ExecuTorch XNNPACK: dynamic INT8 encoders and decoder (per-token activation "
                "scales), 8da4w LLM (head and 20 % of the weights at INT8), INT8 embeddings",
            ),
            Recipe(
                "apple-ane",
                "coreml",
                {
                    "encode_image": Int8WeightOnly(),
                    "segment": Int8WeightOnly(),
                    # k-means weighted by each weight's output sensitivity, a table per row: on a real
                    # 0.5 B LLM +9.0 % perplexity against +15.3 % per 16 rows and +49.7 % unweighted, for
                    # 30 bytes a row (6.34x at full size with the lookup; docs/results/real-weights.md).
                    # Apple's guide warns that more tables may run slower: group_size 16 is the speed-first
                    # setting
                    "llm": Palettize(4, 1, data_aware=True),
                    # the lookup too: a table tied to the head takes the head's tables and is stored once
                    # (the real 0.5 B tied LLM: docs/results/real-weights.md); untied, plain k-means per row
                    "embed": Palettize(4, 1, data_aware=True),
                },
                default=Float16(),
                description="Core ML for the Neural Engine: per-channel INT8 encoders and decoder, "
                "4-bit palettized LLM and lookup (sensitivity-weighted tables, one per row; a tied table "
                "stored once), fp16 compute",
            ),
            Recipe(
                "apple-gpu",
                "coreml",
                # asymmetric: on the teacher symmetric INT4 lost 1.7 points of GCG [-2.9, -0.2], asymmetric
                # +0.9 [-0.2, +2.2] (weights replayed on Linux; docs/results/quantization.md)
                # the lookup per-channel INT8 as the head (head_bits 8): a tied table is stored once
                {"llm": Int4WeightOnly(group_size=32, symmetric=False), "embed": Int8WeightOnly()},
                default=Float16(),
                description="Core ML for the Apple GPU: asymmetric INT4 per-block LLM with an INT8 head and "
                "lookup (a tied table stored once), fp16 elsewhere",
            ),
            Recipe(
                "intel-openvino",
                "openvino",
                {
                    "encode_image": w8a8,
                    "segment": w8a8,
                    "embed": Int8WeightOnly(),
                    # asymmetric INT4 in groups of 64 with data-aware scales: optimum-intel's tuned
                    # weight-compression config for Phi-3-mini and Phi-3.5-mini
                    "llm": Int4WeightOnly(group_size=64, symmetric=False, data_aware=True),
                },
                description="OpenVINO: NNCF INT8 PTQ encoders and decoder, "
                "data-aware INT4 LLM in groups of 64",
            ),
            Recipe(
                "jetson-trt",
                "onnx",
                {"encode_image": w8a8},
                default=Float16(),
                description="ONNX for TensorRT on Jetson: QDQ INT8 image encoder, FP16 elsewhere",
            ),
        )
    }


RECIPES: dict[str, Recipe] = _named()


def get_recipe(name: str) -> Recipe:
    """The named recipe ``name``.

    Raises:
        ValueError: unknown name (lists the named recipes and says a TOML path also works).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(
            f"unknown recipe {name!r}; named recipes: {', '.join(RECIPES)} (or give a path to a .toml recipe)"
        ) from None


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A named recipe, or the recipe in a TOML file (anything ending in ``.toml``).

    Raises:
        ValueError: unknown name, malformed TOML, or an invalid recipe.
        FileNotFoundError: the TOML file does not exist.
    """
    text = str(name_or_path)
    if not text.endswith(".toml"):
        return get_recipe(text)
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"recipe file {path} is not valid TOML: {err}") from None
    return Recipe.from_dict(data, where=f"recipe file {path}")
