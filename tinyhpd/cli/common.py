"""What every command that loads a model shares: `--model --revision --threads`, and one way to load it."""
from __future__ import annotations

import argparse
import math
from typing import Any, Optional


def add_model_args(p: argparse.ArgumentParser, *, model_help: Optional[str] = None) -> None:
    p.add_argument("--model", default=None, help=model_help or (
        "local sentence-transformers folder or Hub id (default: $TINYHPD_MODEL, else the bundled model)"))
    p.add_argument("--revision", default=None, help="Hub revision (commit, branch or tag)")
    p.add_argument("--threads", type=count, default=None,
                   help="CPU threads for encoding (default: $TINYHPD_NUM_THREADS, else the CPUs this process may use)")


def count(text: str) -> int:
    """argparse ``type`` of a flag that counts something (rows, threads, results, seconds): an int >= 1. argparse
    reports a bad value as a usage error naming the flag (``argument --batch-size: must be ...``), before any work."""
    return _at_least(text, 1)


def count_or_zero(text: str) -> int:
    """argparse ``type``: an int >= 0 (where 0 means none, or all, as the flag's help says)."""
    return _at_least(text, 0)


def _at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {'a positive integer' if least else 'an integer >= 0'}, got {value}")
    return value


def port(text: str) -> int:
    """argparse ``type`` of a TCP port: an int in 0..65535."""
    value = _at_least(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535, got {value}")
    return value


def seconds(text: str) -> float:
    """argparse ``type`` of a timeout: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def load_model(name: Optional[str], revision: Optional[str] = None, threads: Optional[int] = None) -> Any:
    """The one place commands load a model (tests replace it)."""
    import tinyhpd

    return tinyhpd.load(name, revision=revision, num_threads=threads)


def load_from_args(args: argparse.Namespace, name: Optional[str] = None, revision: Optional[str] = None) -> Any:
    return load_model(name if name is not None else args.model,
                      revision if revision is not None else args.revision, getattr(args, "threads", None))


def items_from_args(given, input_path, noun: str, verb: str) -> list:
    """The items a command works on: given as arguments, or one a line in `--input` (a file or '-'), not both."""
    from tinyhpd._io import read_lines

    if input_path is not None and given:
        raise ValueError(f"give {noun} as arguments or with --input, not both")
    if input_path is None and not given:
        raise ValueError(f"nothing to {verb}: give {noun} as arguments or --input FILE")
    return read_lines(input_path) if input_path is not None else list(given)
