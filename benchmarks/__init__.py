"""xsam_edge.benchmarks (not built yet; see README)."""
