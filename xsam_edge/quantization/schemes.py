"""Quantization schemes as values: one frozen dataclass per scheme, validated when built.

A scheme says *what* a graph becomes (integer compute, integer storage, half precision or float); a backend
handler (``quantization/<backend>.py``) says *how* its own quantizer does it. The names are the ones users
write in TOML recipes and on the command line:

==============  ==============================================================================================
name            meaning
==============  ==============================================================================================
``fp32``        keep float32 (the export as is)
``fp16``        half-precision weights and compute where the backend runs fp16
``w8a8``        INT8 weights per output channel + INT8 activations from calibrated static ranges (integer
                compute)
``w8a8-dyn``    INT8 weights per channel + INT8 activations quantized at run time (no calibration)
``w8``          INT8 weights per channel, float compute (weight-only: storage and bandwidth)
``w4``          INT4 weights in groups of ``group_size`` along the input dimension, float compute
``8da4w``       INT4 group-wise weights + INT8 dynamic activations (XNNPACK's LLM scheme)
``palettize``   ``nbits``-bit look-up-table weights (k-means), one table per ``group_size`` output channels;
                ``data_aware``: the k-means weighted by each weight's output sensitivity
==============  ==============================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = [
    "SCHEMES",
    "Float16",
    "Float32",
    "Int4WeightOnly",
    "Int8DynActInt4Weight",
    "Int8Dynamic",
    "Int8Static",
    "Int8WeightOnly",
    "Palettize",
    "Scheme",
    "scheme_from_dict",
]


def _check_head_bits(name: str, head_bits: int) -> None:
    if isinstance(head_bits, bool) or head_bits not in (4, 8):
        raise ValueError(f"{name}: head_bits must be 4 or 8, got {head_bits!r}")


def _check_ratio(name: str, ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise ValueError(f"{name}: ratio must be a number in (0, 1], got {ratio!r}")


def _check_group(name: str, group_size: int) -> None:
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"{name}: group_size must be a positive int, got {group_size!r}")
    if group_size & (group_size - 1):
        raise ValueError(f"{name}: group_size must be a power of two (16, 32, 64, 128 …), got {group_size}")


@dataclass(frozen=True)
class Scheme:
    """Base of every scheme. ``name`` is the string users write; ``calibrated`` says whether it needs data."""

    name: ClassVar[str] = ""
    calibrated: ClassVar[bool] = False
    bits: ClassVar[int] = 32  # weight bits, for the size estimate

    def to_dict(self) -> dict[str, Any]:
        """The scheme as ``{"scheme": name, **fields}`` (what a TOML recipe holds)."""
        return {"scheme": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def label(self) -> str:
        """A short label for tables (``w4-g32``)."""
        return self.name


@dataclass(frozen=True)
class Float32(Scheme):
    """Keep the float32 export."""

    name: ClassVar[str] = "fp32"


@dataclass(frozen=True)
class Float16(Scheme):
    """Half-precision weights (and compute where the backend has fp16 kernels)."""

    name: ClassVar[str] = "fp16"
    bits: ClassVar[int] = 16


SMOOTH_QUANT = ("off", "on", "auto")


@dataclass(frozen=True)
class Int8Static(Scheme):
    """W8A8: per-channel symmetric INT8 weights, INT8 activations from calibrated ranges.

    Every setting the backends' quantizers expose that moves accuracy is a field, so a recipe can reach it.

    Args:
        per_channel (bool): one weight scale per output channel (else one per tensor).
        calibration_method (str): ``minmax`` or ``percentile`` (clips rare outliers; backends that lack it
            fall back to their closest method and say so in the report).
        smooth_quant (str): outlier migration into the weights: ``off``, ``on``, or ``auto`` (quantize both
            ways and keep the one whose worst held-out sample is closer to float; the report says which; once,
            off, where the backend has nothing to smooth: OpenVINO, a graph without weighted MatMuls).
            SmoothQuant helps LLM activations with massive outliers and can collapse a ViT.
        smooth_quant_alpha (float | None): migration strength in [0, 1] (``None``: the library's default).
        symmetric_activations (bool | None): symmetric INT8 activations (``None``: the backend's default;
            ONNX Runtime symmetric, NNCF's MIXED preset asymmetric).
        op_types (tuple[str, ...]): the backend's op types to quantize (ONNX ``MatMul``, ``Conv`` …; OpenVINO
            ``MatMul``, ``Convolution`` …); empty: every compute op the handler knows.
    """

    name: ClassVar[str] = "w8a8"
    calibrated: ClassVar[bool] = True
    bits: ClassVar[int] = 8
    per_channel: bool = True
    calibration_method: str = "minmax"
    smooth_quant: str = "auto"
    smooth_quant_alpha: float | None = None
    symmetric_activations: bool | None = None
    op_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.calibration_method not in ("minmax", "percentile"):
            raise ValueError(
                f"w8a8: calibration_method must be 'minmax' or 'percentile', got {self.calibration_method!r}"
            )
        if self.smooth_quant not in SMOOTH_QUANT:
            raise ValueError(
                f"w8a8: smooth_quant must be one of {', '.join(SMOOTH_QUANT)}, got {self.smooth_quant!r}"
            )
        alpha = self.smooth_quant_alpha
        if alpha is not None and (
            isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1
        ):
            raise ValueError(f"w8a8: smooth_quant_alpha must be a number in [0, 1] or absent, got {alpha!r}")
        if self.symmetric_activations is not None and not isinstance(self.symmetric_activations, bool):
            raise ValueError(
                f"w8a8: symmetric_activations must be true or false, got {self.symmetric_activations!r}"
            )
        if isinstance(self.op_types, str) or not all(isinstance(t, str) and t for t in self.op_types):
            raise ValueError(f"w8a8: op_types must be a list of op type names, got {self.op_types!r}")
        object.__setattr__(self, "op_types", tuple(self.op_types))


@dataclass(frozen=True)
class Int8Dynamic(Scheme):
    """INT8 per-channel weights with activations quantized at run time (no calibration data)."""

    name: ClassVar[str] = "w8a8-dyn"
    bits: ClassVar[int] = 8


@dataclass(frozen=True)
class Int8WeightOnly(Scheme):
    """INT8 per-channel weights, float compute: a 4× smaller file, the same kernels."""

    name: ClassVar[str] = "w8"
    bits: ClassVar[int] = 8


@dataclass(frozen=True)
class Int4WeightOnly(Scheme):
    """INT4 group-wise weights, float compute.

    Args:
        group_size (int): weights per scale along the input dimension (a power of two).
        symmetric (bool): symmetric INT4 (else asymmetric with a zero point per group).
        data_aware (bool): let the backend use calibration data to pick scales (NNCF scale estimation /
            AWQ); ignored, and reported, where the backend has no data-aware INT4.
        ratio (float): the fraction of the weights at INT4; the rest, the most sensitive layers by the
            backend's ranking (NNCF's, or the weight quantization error on ONNX), stay INT8 (mixed INT4/INT8).
        head_bits (int): 8 or 4, the bits of the graph's output layers (an LLM's head, and a lookup table
            tied to it). 8 by default, as NNCF and llama.cpp keep it: the head is the most sensitive layer,
            and 4 saves half its bytes (68 MB on a 151,936 × 896 table) for a measured perplexity cost.
    """

    name: ClassVar[str] = "w4"
    bits: ClassVar[int] = 4
    group_size: int = 32
    symmetric: bool = True
    data_aware: bool = False
    ratio: float = 1.0
    head_bits: int = 8

    def __post_init__(self) -> None:
        _check_group(self.name, self.group_size)
        _check_ratio(self.name, self.ratio)
        _check_head_bits(self.name, self.head_bits)

    @property
    def calibrated(self) -> bool:  # type: ignore[override]
        return self.data_aware

    def label(self) -> str:
        mixed = f"-r{round(self.ratio * 100)}" if self.ratio < 1 else ""
        head = "-h4" if self.head_bits == 4 else ""
        return f"w4-g{self.group_size}" + ("-awq" if self.data_aware else "") + mixed + head


@dataclass(frozen=True)
class Int8DynActInt4Weight(Scheme):
    """8da4w: INT4 group-wise weights and INT8 dynamic per-token activations (XNNPACK's LLM kernels).

    Args:
        group_size (int): weights per scale along the input dimension (a power of two).
        head_bits (int): 4 or 8, the weight bits of the graph's output layers (an LLM's head). 4 by default,
            as ExecuTorch's own LLM export quantizes every Linear; 8 is INT8 per channel with the same
            dynamic activations.
        ratio (float): the fraction of the other Linear weights at INT4; the rest, those INT4 resolves worst
            (the data-free weight error ONNX's mixed ``w4`` ranks by), INT8 per channel with the same
            dynamic activations (mixed INT4/INT8).
    """

    name: ClassVar[str] = "8da4w"
    bits: ClassVar[int] = 4
    group_size: int = 32
    head_bits: int = 4
    ratio: float = 1.0

    def __post_init__(self) -> None:
        _check_group(self.name, self.group_size)
        _check_head_bits(self.name, self.head_bits)
        _check_ratio(self.name, self.ratio)

    def label(self) -> str:
        mixed = f"-r{round(self.ratio * 100)}" if self.ratio < 1 else ""
        return f"8da4w-g{self.group_size}" + mixed + ("-h8" if self.head_bits == 8 else "")


@dataclass(frozen=True)
class Palettize(Scheme):
    """k-means look-up-table weights (Core ML's palettization).

    Args:
        nbits (int): bits per weight index (2, 3, 4, 6 or 8).
        group_size (int): output channels sharing one table (0: one table per tensor).
        data_aware (bool): weigh each weight in its table's k-means by the diagonal of the graph's output
            Gauss-Newton matrix on the calibration samples (SqueezeLLM's sensitivity-weighted k-means), so
            the table's values sit where the outputs are sensitive. Without it every weight counts alike.
        ratio (float): the fraction of the weights palettized; the rest, those the tables resolve worst
            (sensitivity-weighted error per weight when ``data_aware``), INT8 per channel.
        head_bits (int | None): 8 keeps the graph's output layers (an LLM's head) INT8 per channel;
            ``None`` palettizes them like the rest.
    """

    name: ClassVar[str] = "palettize"
    nbits: int = 4
    group_size: int = 16
    data_aware: bool = False
    ratio: float = 1.0
    head_bits: int | None = None

    def __post_init__(self) -> None:
        if self.nbits not in (2, 3, 4, 6, 8):
            raise ValueError(f"palettize: nbits must be one of 2, 3, 4, 6, 8, got {self.nbits!r}")
        if self.group_size != 0:
            _check_group(self.name, self.group_size)
        if not isinstance(self.data_aware, bool):
            raise ValueError(f"palettize: data_aware must be true or false, got {self.data_aware!r}")
        _check_ratio(self.name, self.ratio)
        if self.head_bits is not None and (isinstance(self.head_bits, bool) or self.head_bits != 8):
            raise ValueError(f"palettize: head_bits must be 8 or absent, got {self.head_bits!r}")

    @property
    def calibrated(self) -> bool:  # type: ignore[override]
        return self.data_aware

    @property
    def bits(self) -> int:  # type: ignore[override]
        return self.nbits

    def label(self) -> str:
        weighted = "-fisher" if self.data_aware else ""
        mixed = f"-r{round(self.ratio * 100)}" if self.ratio < 1 else ""
        head = "-h8" if self.head_bits == 8 else ""
        return f"pal{self.nbits}-g{self.group_size}{weighted}{mixed}{head}"


SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls
    for cls in (
        Float32,
        Float16,
        Int8Static,
        Int8Dynamic,
        Int8WeightOnly,
        Int4WeightOnly,
        Int8DynActInt4Weight,
        Palettize,
    )
}


def scheme_from_dict(data: dict[str, Any] | str, where: str = "scheme") -> Scheme:
    """Build a scheme from ``"w8a8"`` or ``{"scheme": "w4", "group_size": 64}``.

    Args:
        data (dict[str, Any] | str): the scheme name, or a table with ``scheme`` and the scheme's fields.
        where (str): where the value came from, for error messages (``graphs.llm``).

    Returns:
        Scheme: the validated scheme.

    Raises:
        ValueError: unknown scheme name (lists the known ones), unknown field, or a bad field value.
    """
    table = {"scheme": data} if isinstance(data, str) else dict(data)
    name = table.pop("scheme", None)
    if name not in SCHEMES:
        raise ValueError(f"{where}: unknown scheme {name!r}; known schemes: {', '.join(SCHEMES)}")
    cls = SCHEMES[name]
    allowed = {f.name for f in fields(cls)}
    extra = sorted(set(table) - allowed)
    if extra:
        raise ValueError(
            f"{where}: scheme {name!r} has no field(s) {', '.join(extra)}; "
            f"its fields: {', '.join(sorted(allowed)) or 'none'}"
        )
    try:
        return cls(**table)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
