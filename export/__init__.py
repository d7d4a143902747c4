"""xsam_edge.export (not built yet; see README)."""
