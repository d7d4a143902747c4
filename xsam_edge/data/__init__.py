"""Datasets: the procedural "shapes" suite and loaders for real formats, all yielding ``Example`` values."""
