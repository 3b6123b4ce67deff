"""Helpers the scaling benchmarks share: time a function in k spawned processes at once, and print
a result table and append it to its results file."""

from __future__ import annotations

import multiprocessing as mp
import threading


def reported_by(target, args: tuple, processes: int) -> list[float]:
    """What each of `processes` spawned processes reported, each running target(*args, out) at
    once and putting one number on `out` (its seconds, or its rate)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    values = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    return values


def slowest_of(target, args: tuple, processes: int) -> float:
    """Seconds reported by the slowest of `processes` processes running target(*args, out) at once."""
    return max(reported_by(target, args, processes))


def in_threads(work, count: int) -> None:
    """work(i) for i in 0..count-1, each on its own thread, all started at once; returns when all end."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def report(text: str, out: str | None) -> None:
    """Print `text`; append it to the file `out` (results files keep every run)."""
    print(text)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")


def table(title: str, command: str, header: list[str], rows: list[str]) -> str:
    """A results file's section: its title, the command, and a table (the first column text, the
    others numbers); `rows` are formatted table lines."""
    rule = "|---|" + "---:|" * (len(header) - 1)
    head = "| " + " | ".join(header) + " |"
    return "\n".join([f"# {title}", "", f"Command: `{command}`", "", head, rule, *rows]) + "\n"
