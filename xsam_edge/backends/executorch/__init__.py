"""ExecuTorch: ``.pte`` programs for phones (XNNPACK on Android and iOS CPUs, or Apple's Core ML delegate)."""

from xsam_edge.backends.registry import Backend

EXECUTORCH = Backend(
    name="executorch",
    description="ExecuTorch .pte programs (XNNPACK on phone CPUs, or the Core ML delegate on Apple)",
    # one llm.pte whose prefill, decode, read_cache and write_cache methods share the cache buffers
    llm_graphs=("llm_prefill",),
    stateful=True,
    schemes=("fp32", "w8a8", "w8a8-dyn", "w8", "8da4w"),
    requires=(("executorch", "executorch"), ("torchao", "torchao")),
    exporter="xsam_edge.backends.executorch.export:export_executorch",
    quantizer="xsam_edge.backends.executorch.quantize:ExecuTorchQuantizer",
    runtime="xsam_edge.backends.executorch.runtime:ExecuTorchBackend",
    export_options=("partitioner",),
    pack="xsam_edge.backends.executorch.pack:share_tied_table",  # a tied table stored once, in llm.ptd
    pack_options=("tied_embed",),
)
