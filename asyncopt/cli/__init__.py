"""The `asyncopt` command line: train on your files, predict, study speed-up and delays, and look
at the machine.

    asyncopt fit --model eigenpro --data train.csv --output model.asyncopt
    asyncopt predict --model model.asyncopt --data test.csv --output predictions.csv
    asyncopt info

A mistake prints one line on stderr and exits non-zero (2 for a usage error, 1 for bad data or a
failed run, 130 when interrupted); --debug shows the traceback. A warning (a fit that stopped short
of its tolerance, a Ray actor that died) is one line on stderr too.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from asyncopt.cli.errors import UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from asyncopt.cli import bench, demos, fit, info

    parser = _Parser(prog="asyncopt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fit.add_parsers(sub)
    bench.add_parser(sub)
    info.add_parser(sub)
    demos.add_parsers(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv in ([], ["--debug"]):  # (no command: the demo)
        argv = [*argv, "demo"]
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    shown = warnings.showwarning
    if not debug:  # (a warning is a line too, not the code's path and source line)
        warnings.showwarning = _warning_line(args.command)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"asyncopt: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user sees one line, --debug the traceback
        if debug:
            raise
        status = 2 if _is_usage(exc) else 1
        print(f"asyncopt {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return status
    finally:
        warnings.showwarning = shown


def _warning_line(command: str):
    """warnings.showwarning that prints `asyncopt COMMAND: warning: Category: message` on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"asyncopt {command}: warning: {category.__name__}: {message}", file=sys.stderr)

    return show


def _is_usage(exc: BaseException) -> bool:
    from sklearn.utils._param_validation import InvalidParameterError

    return isinstance(exc, UsageError | InvalidParameterError)


def _one_line(exc: BaseException) -> str:
    """The error's message as one line (the first lines of a long one, e.g. a worker's traceback)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} (--debug for the rest)"
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    return text if isinstance(exc, ValueError | OSError | UsageError) else f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
