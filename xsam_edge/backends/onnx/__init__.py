"""ONNX: graphs for ONNX Runtime (CPU everywhere; TensorRT and CUDA providers on NVIDIA, Jetson included)."""

from xsam_edge.backends.registry import Backend

ONNX = Backend(
    name="onnx",
    description="ONNX files for ONNX Runtime (CPU; TensorRT / CUDA providers on NVIDIA and Jetson)",
    # no program state in ONNX: the KV cache goes in and out of a prefill and a decode graph
    llm_graphs=("llm_kvio_prefill", "llm_kvio_decode"),
    stateful=False,
    schemes=("fp32", "fp16", "w8a8", "w8a8-dyn", "w8", "w4"),
    requires=(("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("onnxscript", "onnxscript")),
    exporter="xsam_edge.backends.onnx.export:export_onnx",
    quantizer="xsam_edge.backends.onnx.quantize:OnnxQuantizer",
    runtime="xsam_edge.backends.onnx.runtime:OnnxRuntimeBackend",
    pack="xsam_edge.backends.onnx.pack:share_llm_weights",  # the LLM pair's weights stored once
    pack_options=("tied_embed",),
)
