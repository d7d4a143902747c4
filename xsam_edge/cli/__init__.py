"""``xsam-edge``: one verb per stage, each a thin layer over one library function.

Errors a user can cause (bad files, bad prompts, wrong checkpoints) print one line and exit with 2; no
traceback. ``XSAM_EDGE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import bench, distill, edge, model, pipeline

EXIT_USER_ERROR = 2

# verb groups in the order ``xsam-edge --help`` lists them
GROUPS = (model, pipeline, edge, bench, distill)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (and exit code 2), like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xsam-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # torchao (pulled in by executorch) warns that its CUDA-only kernels do not load on CPU: harmless noise
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's enum registration
    logging.getLogger("nncf").setLevel(logging.WARNING)  # NNCF prints a bit-width table per graph at INFO
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # read by transformers when (and only if) a verb imports it: `run` stays free of torch
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        code = args.run(args)  # a verb may return a non-zero status (a fidelity target missed: 1)
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as err:
        # ValueError covers RequestError, BundleError and every bad value; OSError every file a user named
        # (missing, a folder, a file where a folder must go, no permission); UnpicklingError a checkpoint
        # that carries code, refused by weights_only loading
        if os.environ.get("XSAM_EDGE_DEBUG"):
            raise
        print(f"xsam-edge {args.verb}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


def one_line(err: BaseException, limit: int = 2000) -> str:
    """An error's message on one line (a multi-line report joined by "; "), its type when it has none."""
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    if isinstance(err, pickle.UnpicklingError):
        text = f"the file carries objects that weights-only loading refuses (no code from it ran): {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
