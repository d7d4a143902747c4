"""xsam_edge.quantization (not built yet; see README)."""
