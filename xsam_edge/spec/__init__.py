"""The host spec, no torch: what every runtime (PyTorch, Python bundle runtime, native) follows.

Request and result types and their validation, the prompt templates, the tokenizer wrapper, the request plan
(prompt → region tokens → prefill → answers → condition slots → segment → finish), image pre- and
post-processing, golden vectors and the bundle manifest schema.
"""
