"""Task metrics on numpy masks (no model): per-task scores, COCO-style AP, PQ, and the paired bootstrap."""
