"""Quantization: recipes and schemes as values, one handler per backend, checked on held-out data.

Entry points:

- ``quantize.quantize_bundle(model, tokenizer, recipe, out)``: an X-SAM model into a quantized bundle
  (``xsam-edge quantize --recipe``); ``accuracy.fit_max_drop`` for a task-metric budget (``--max-drop``).
- ``any_model.quantize_model(model, backend, scheme, out, …)``: any torch module, ONNX file (any opset) or
  Hugging Face folder (``xsam-edge quantize --model-file``), with a fidelity target on held-out samples.

Every report says what it was measured on (``report.measured_on``) and keeps the worst sample's PSNR and
cosine per output (``fidelity.py``); a target falls back layer by layer in measured order (``fallback.py``).
"""
