"""xsam_edge.export: edge graphs with static shapes (``graphs``); backend converters are not built yet."""
