"""`asyncopt bench {speedup,delay}`: the speed-up and delay studies (asyncopt.studies) on the
user's data, written as Markdown and JSON tables and PNG plots in --output-dir."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

from asyncopt.cli.errors import UsageError
from asyncopt.cli.fit import _data_options, add_model_options, make_estimator


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="speed-up or delay study on your data (tables and plots)")
    kinds = bench.add_subparsers(dest="study", metavar="STUDY", required=True)
    speedup = kinds.add_parser("speedup", help="time to target with 1, 2, ... workers")
    speedup.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    speedup.add_argument("--engine", default="processes", choices=["threads", "processes", "ray"], dest="engine")
    delay = kinds.add_parser("delay", help="epochs to target under simulated delays (serial engine)")
    delay.add_argument("--delays", default="0,1,3,7,15,31", help="max_delay values, comma-separated")
    delay.add_argument("--inconsistent", action="store_true", help="simulate inconsistent reads too")
    delay.add_argument("--budget", type=float, default=3.0, help="delayed fits get this many times delay 0's epochs")
    for p in (speedup, delay):
        _data_options(p)
        add_model_options(p)
        p.add_argument("--slack", type=float, default=0.05, help="target: the reference's final loss x (1 + slack)")
        p.add_argument("--output-dir", required=True, metavar="DIR", help="where the tables and plots go")
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(run=run_bench)


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{name} {text!r}: give whole numbers separated by commas") from None
    if not values or min(values) < 0:
        raise UsageError(f"--{name} {text!r}: give non-negative whole numbers separated by commas")
    return values


def run_bench(args) -> int:
    from asyncopt import plot, studies
    from asyncopt.readers import read_data

    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {out} is a file")
    if args.slack < 0:
        raise UsageError(f"--slack {args.slack}: must be >= 0")
    counts = _ints(args.workers, "workers") if args.study == "speedup" else _ints(args.delays, "delays")
    if args.study == "speedup" and min(counts) < 1:
        raise UsageError("--workers: every count must be >= 1")
    target = -1 if args.target_column is None else args.target_column
    data = read_data(args.data, args.format, target, labels=args.labels)
    if data.y is None:
        raise UsageError(f"{args.data} holds no labels")
    est, _ = make_estimator(args, data.y)
    if "evals_per_epoch" not in {k.removeprefix("param_") for k, v in vars(args).items() if v is not None}:
        est.set_params(evals_per_epoch=4)  # (time to target needs more than one point an epoch)
    say = (lambda row: None) if args.quiet else (lambda row: print(_row_line(row), file=sys.stderr, flush=True))
    if not args.quiet:
        print(f"data: {data.description}; {type(est).__name__}", file=sys.stderr)
    if args.study == "speedup":
        result = studies.speedup_study(est, data.X, data.y, counts, backend=args.engine, slack=args.slack, progress=say)
    else:
        result = studies.delay_study(
            est, data.X, data.y, counts, inconsistent_reads=args.inconsistent, budget=args.budget,
            slack=args.slack, progress=say,
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    command = "asyncopt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "asyncopt bench"
    name = args.study
    with _atomic(out / f"{name}.md") as tmp:
        tmp.write_text(studies.markdown(result, command), encoding="utf-8")
    with _atomic(out / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    with _atomic(out / f"{name}.png") as tmp:
        (plot.plot_speedup if name == "speedup" else plot.plot_delay)(result, path=tmp)
    with _atomic(out / f"{name}_convergence.png") as tmp:
        plot.plot_convergence(result["runs"], path=tmp, title=f"{name} study: convergence")
    if not args.quiet:
        print(studies.markdown(result, command), end="")
        print(f"written: {', '.join(str(out / f) for f in (f'{name}.md', f'{name}.json', f'{name}.png'))}")
    return 0


@contextlib.contextmanager
def _atomic(path: Path):
    """A temporary name next to `path`, renamed to it when the block ends without an error (an
    interrupted bench leaves the previous file or none, never half of one)."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _row_line(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
