"""Peak memory of a measuring child process is its own, not the parent's it was forked from."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from xsam_edge.bench.harness import peak_rss_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss carries over exec on Linux")
def test_a_child_reports_its_own_peak_not_its_parents():
    held = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process when the child is forked
    code = "from xsam_edge.bench.harness import peak_rss_bytes; print(peak_rss_bytes())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = int(run.stdout)
    assert child < 400 * 2**20 < 600 * 2**20 <= peak_rss_bytes(), (child, held.size)
