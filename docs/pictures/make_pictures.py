"""The pictures of docs/guide.md and the README, from real runs on the shared data (a9a, MNIST).

    python docs/pictures/make_pictures.py      # about two minutes on 2 cores; needs ../shared/data

AsyB-ProxSGD: L1 logistic regression on a9a (alpha 1e-4), processes engine, 1 and 2 workers.
AsyncEigenPro: MNIST, the first 10,000 training images, the delay simulator.
"""

import json
from pathlib import Path

from asyncopt import EigenProClassifier, ProxSGDClassifier, plot, studies
from asyncopt.datasets import load_a9a, load_mnist

HERE = Path(__file__).parent
OPTIMA = HERE.parents[1] / "benchmarks" / "results" / "proxsgd_optima.json"  # liblinear at tol 1e-8, no intercept


def main() -> None:
    f_star = json.loads(OPTIMA.read_text())["a9a/alpha=0.0001"]["objective"]
    X, y, _, _ = load_a9a()
    common = dict(penalty="l1", alpha=1e-4, fit_intercept=False, max_epochs=12, tol=None, evals_per_epoch=4,
                  random_state=0, backend="processes", threads_per_worker=1)  # fmt: skip
    runs = {f"{w} worker{'s' if w > 1 else ''}": ProxSGDClassifier(n_workers=w, **common).fit(X, y) for w in (1, 2)}
    plot.plot_convergence(runs, optimum=f_star, path=HERE / "convergence.png",
                          title="AsyB-ProxSGD, L1 logistic regression on a9a (processes)")  # fmt: skip
    plot.plot_convergence(runs, x="samples", optimum=f_star, path=HERE / "convergence_samples.png",
                          title="AsyB-ProxSGD on a9a: the same runs against samples")  # fmt: skip
    two = runs["2 workers"]
    plot.plot_staleness(two, path=HERE / "staleness.png", title="a9a, 2 processes workers: staleness of each update")
    plot.plot_timeline(two, path=HERE / "timeline.png", title="a9a, 2 processes workers: what each worker did")
    speed = studies.speedup_study(ProxSGDClassifier(**{**common, "backend": "serial"}), X, y, workers=(1, 2))
    plot.plot_speedup(speed, path=HERE / "speedup.png", title="AsyB-ProxSGD on a9a: speed-up (processes)")
    Xm, ym, _, _ = load_mnist()
    est = EigenProClassifier(bandwidth=10.0, epochs=2, evals_per_epoch=4, random_state=0)
    delay = studies.delay_study(est, Xm[:10_000], ym[:10_000], delays=(0, 1, 3, 7, 15, 31))
    plot.plot_delay(delay, path=HERE / "delay.png", title="AsyncEigenPro, MNIST 10k: consistent delayed reads")
    torn = studies.delay_study(est, Xm[:10_000], ym[:10_000], delays=(0, 1, 3, 7, 15, 31), inconsistent_reads="torn")
    plot.plot_delay(torn, path=HERE / "delay_inconsistent.png", title="AsyncEigenPro, MNIST 10k: torn reads (no rule)")
    for name, result in (("speedup", speed), ("delay", delay), ("delay_inconsistent", torn)):
        (HERE / f"{name}.md").write_text(studies.markdown(result, "python docs/pictures/make_pictures.py"))


if __name__ == "__main__":
    main()
