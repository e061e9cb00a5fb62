"""The `coolchic` console script and `python -m coolchic`.

`coolchic decode ...` and `coolchic --version` run here without importing typer, rich or the
other commands (a few hundred milliseconds of start-up on a busy machine, more than a decode
takes: docs/speed.md). Everything else goes to the typer app (`coolchic.cli`): the other commands,
`--help`, and any `decode` line this parser does not read as plain paths and known options
each with a value; typer then parses it, and reports a malformed one, as it always has. Both
paths decode with `coolchic.cli_decode.decode_files`, so they print the same lines and exit
with the same status (tested).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# decode's options that take a value, and the keyword of `decode_files` each sets
_DECODE_OPTIONS = {"--output": "output", "-o": "output", "--device": "device",
                   "--checkpoint": "checkpoint", "--layers": "layers"}


def parse_decode(args: list[str]) -> dict | None:
    """The arguments after `decode` as keywords of `decode_files`, or None for anything
    else: a flag or option not in `_DECODE_OPTIONS` (--help among them), a missing, empty or
    dash-led value, `-`, `--`, `-oFILE`, a --layers that is not a decimal number, or no path."""
    paths: list[Path] = []
    options: dict = {}
    rest = iter(args)
    for arg in rest:
        if not arg or arg == "-" or arg == "--":
            return None
        if not arg.startswith("-"):
            paths.append(Path(arg))
            continue
        name, equals, value = arg.partition("=")
        if name not in _DECODE_OPTIONS or (equals and name == "-o"):
            return None  # click reads -o=X as the value "=X": let it
        if not equals:
            value = next(rest, "")
        if not value or value.startswith("-"):
            return None
        key = _DECODE_OPTIONS[name]
        if key == "layers":
            if not (value.isascii() and value.isdigit()):
                return None
            options[key] = int(value)
        else:
            options[key] = value if key == "device" else Path(value)
    if not paths:
        return None
    return {"bitstreams": paths, **options}


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit status, or
    leaves through SystemExit from typer for what goes to the typer app."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:
        from coolchic.cli_decode import version_line

        print(version_line())
        return 0
    parsed = parse_decode(args[1:]) if args[:1] == ["decode"] else None
    if parsed is not None:
        # The decoder keeps each matrix product small enough for one BLAS thread (see
        # coolchic.decoder.reconstruct) and gives the same image on any count, so OpenBLAS
        # need not start its thread pool when numpy is imported: 50-100 ms on a busy machine.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        from coolchic.cli_decode import decode_files

        return decode_files(**parsed)
    from coolchic.cli import app

    return app(args=args)
