"""Distil a student X-SAM from a teacher, prompt in the loop, under torchrun (issue #6).

Modules, one job each: ``config`` (what to distil, as frozen values), ``pairing`` (can these two models be
paired, and the adapters between their feature widths), ``losses`` (every distillation loss), ``prune``
(structured decoder pruning from the teacher), ``engine`` (the DDP loop with checkpoints and resume) and
``run`` (teacher, student, data and tokenizer from names and folders: what the CLI calls).
"""
