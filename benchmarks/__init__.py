"""Measurement commands (``python -m benchmarks.<name>``), run from the repository root.

Each writes a results file under ``docs/results/data/``. Not installed with the package; product code never
imports them.
"""

from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results" / "data"
