"""OpenVINO: IR for Intel CPUs, GPUs and NPUs; the LLM one stateful IR (its cache is ReadValue / Assign)."""

from xsam_edge.backends.registry import Backend

OPENVINO = Backend(
    name="openvino",
    description="OpenVINO IR (Intel CPU, GPU, NPU); the LLM one stateful IR",
    llm_graphs=("llm_prefill",),  # one stateful IR takes prefill chunks and decode steps alike
    stateful=True,
    schemes=("fp32", "fp16", "w8a8", "w8a8-dyn", "w8", "w4"),
    requires=(("openvino", "openvino"), ("nncf", "nncf")),
    exporter="xsam_edge.backends.openvino.export:export_openvino",
    quantizer="xsam_edge.backends.openvino.quantize:OpenVinoQuantizer",
    runtime="xsam_edge.backends.openvino.runtime:OpenVinoBackend",
    pack="xsam_edge.backends.openvino.pack:share_tied_table",  # a tied table stored once, in llm.bin
    pack_options=("tied_embed",),
)
