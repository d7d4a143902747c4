"""xsam_edge.export: edge graphs with static shapes (``graphs``) and one converter per backend (ONNX, OpenVINO,
ExecuTorch, Core ML), packed into one bundle by ``to_bundle``."""
