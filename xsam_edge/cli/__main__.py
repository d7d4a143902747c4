"""``python -m xsam_edge.cli``."""

from xsam_edge.cli import main

raise SystemExit(main())
