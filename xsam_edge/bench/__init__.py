"""``xsam-edge reference`` and ``xsam-edge bench``: golden references, device profiles, harness, report."""
