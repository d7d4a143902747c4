"""Experiments that are not product: distillation ablations and their analyses (see research/README.md)."""
