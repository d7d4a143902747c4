"""xsam_edge.export: static-shape edge graphs and one converter per backend, packed into one bundle."""
