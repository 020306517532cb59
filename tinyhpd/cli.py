"""`python -m tinyhpd ...`: the command line. Each feature module registers its own sub-commands."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# Modules that expose `add_cli(subparsers)`; each sub-parser sets `func(args) -> int`.
# Importing them must stay cheap (no torch, no huggingface_hub at module level).
_SUBCOMMAND_MODULES = (
    "tinyhpd._cli_core",  # encode, convert
    "tinyhpd.index",  # index build, search
    "tinyhpd.distill",  # distill
    "tinyhpd.sts",  # eval sts
    "tinyhpd.bench",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyhpd", description="Compact sentence embeddings with a NumPy forward pass.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError) as exc:
        # User-facing failures (bad file, bad model folder, unreachable Hub): one clear line, no traceback.
        print(f"tinyhpd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
