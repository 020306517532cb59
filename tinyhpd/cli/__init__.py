"""`python -m tinyhpd ...`: the command line, on argparse, `main(argv=None) -> int`.

One module per command group registers its sub-commands with `add_cli(subparsers)` and sets `func(args) -> int`;
argparse lives only in this package. Importing a command module stays cheap (no torch, no huggingface_hub): the
library is imported inside each command. Every user-caused error is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = (
    "tinyhpd.cli.encode",  # encode
    "tinyhpd.cli.rerank",  # rerank
    "tinyhpd.cli.embed",  # embed (corpus job)
    "tinyhpd.cli.convert",  # convert
    "tinyhpd.cli.index",  # index build, search
    "tinyhpd.cli.export",  # export (PostgreSQL + pgvector)
    "tinyhpd.cli.eval",  # eval sts
    "tinyhpd.cli.distill",  # distill
    "tinyhpd.cli.bench",  # bench
    "tinyhpd.cli.serve",  # serve
)

# What a user can cause (a bad file, model folder, argument, unreachable Hub): one line, no traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, ImportError, MemoryError,
               OverflowError, UnicodeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyhpd", description="Compact sentence embeddings with a NumPy forward pass.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return _closed_stdout()
    except USER_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            return _closed_stdout()
        print(f"tinyhpd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _closed_stdout() -> int:
    """The reader went away (`| head`): exit quietly, and keep Python from complaining while it flushes stdout."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0
