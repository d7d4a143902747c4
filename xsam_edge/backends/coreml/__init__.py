"""Core ML: ``.mlpackage`` ML programs for Apple devices (ANE, GPU, CPU); prediction needs macOS."""

from xsam_edge.backends.registry import Backend

COREML = Backend(
    name="coreml",
    description="Core ML packages (iOS 18 / macOS 15; ANE, GPU, CPU); converted anywhere, run on macOS",
    llm_graphs=("llm_prefill", "llm_decode"),  # stateful (iOS 18 state), merged into one package by pack
    stateful=True,
    schemes=("fp32", "fp16", "w8", "w4", "palettize"),
    requires=(("coremltools", "coremltools"),),
    exporter="xsam_edge.backends.coreml.export:export_coreml",
    quantizer="xsam_edge.backends.coreml.quantize:CoreMLQuantizer",
    runtime="xsam_edge.backends.coreml.runtime:CoreMLBackend",
    platforms=("Darwin",),
    host_cpu=False,
    pack="xsam_edge.backends.coreml.pack:pack_llm",
    pack_options=("multifunction", "tied_embed"),
    weights="xsam_edge.backends.coreml.weights:package_weights",
)
