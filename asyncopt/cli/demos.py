"""`asyncopt demo` and `asyncopt sparse-demo`: the solvers on shipped data, their convergence printed."""

from __future__ import annotations

import time


def _demo(args) -> int:
    import numpy as np
    from sklearn.model_selection import train_test_split

    from asyncopt import EigenProClassifier
    from asyncopt.datasets import load_digits_default, load_mnist

    if args.data == "digits":
        X, y = load_digits_default()
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        name = "scikit-learn digits (8x8 images, bundled with scikit-learn)"
    else:
        X_train, y_train, X_test, y_test = load_mnist(args.data_path)
        if args.n_train:
            X_train, y_train = X_train[: args.n_train], y_train[: args.n_train]
        name = "MNIST"
    print(
        f"EigenPro kernel interpolation on {name}: {len(X_train)} train / {len(X_test)} test points, "
        f"{X_train.shape[1]} features, {len(np.unique(y_train))} classes"
    )
    clf = EigenProClassifier(
        kernel=args.kernel,
        bandwidth=args.bandwidth,
        epochs=args.epochs,
        device=args.device,
        dtype=args.dtype,
        evals_per_epoch=args.evals_per_epoch,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    t0 = time.perf_counter()
    clf.fit(X_train, y_train, X_val=X_test, y_val=y_test)
    wall = time.perf_counter() - t0
    print(
        f"setup: bandwidth={clf.bandwidth_:.4g}  subsample s={clf.subsample_size_}  q={clf.n_components_}  "
        f"critical batch m*={clf.critical_batch_size_:.0f}  batch m={clf.batch_size_}  "
        f"step eta={clf.step_size_:.4g}  ({clf.setup_seconds_:.2f} s)"
    )
    print(f"{'epoch':>6} {'seconds':>8} {'train MSE':>10} {'test acc':>9}")
    for h in clf.history_:
        print(f"{h['epoch']:6.2f} {h['seconds']:8.2f} {h['train_mse']:10.3e} {h['val_metric']:9.4f}")
    print(
        f"train accuracy {clf.score(X_train, y_train):.4f}, test accuracy {clf.score(X_test, y_test):.4f}, "
        f"wall {wall:.1f} s"
    )
    if args.plot:
        from asyncopt.plot import plot_history

        plot_history(clf.history_, args.plot, title=f"EigenPro on {args.data}")
        print(f"convergence plot written to {args.plot}")
    return 0


def _sparse_demo(args) -> int:
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a, load_news20

    if args.data == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        name = "scikit-learn breast cancer (bundled with scikit-learn)"
    else:
        X_train, y_train, X_test, y_test = (load_a9a if args.data == "a9a" else load_news20)(args.data_path)
        name = f"{args.data} (sparse, from the shared data folder)"
    print(
        f"AsyB-ProxSGD, L1 logistic regression on {name}: {X_train.shape[0]} train / {X_test.shape[0]} test, "
        f"{X_train.shape[1]} features, alpha={args.alpha:g}, {args.workers} {args.backend} worker(s), "
        f"{args.blocks} block(s)"
    )
    clf = ProxSGDClassifier(
        penalty="l1",
        alpha=args.alpha,
        backend=args.backend,
        n_workers=args.workers,
        n_blocks=args.blocks,
        max_epochs=args.epochs,
        tol=None,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    t0 = time.perf_counter()
    clf.fit(X_train, y_train)
    wall = time.perf_counter() - t0
    print(f"setup: batch={clf.batch_size_}  step eta_0={clf.step_size_:.4g}  blocks={clf.n_blocks_}")
    print(f"{'epoch':>6} {'seconds':>8} {'objective':>10} {'||G||^2':>10} {'nnz':>6} {'step':>9}")
    for h in clf.history_:
        print(
            f"{h['epoch']:6.2f} {h['seconds']:8.2f} {h['objective']:10.6f} {h['grad_mapping_sq']:10.3e} "
            f"{h['nnz']:6d} {h['step_size']:9.3g}"
        )
    staleness = clf.telemetry_["staleness"]
    print(
        f"non-zeros {np.count_nonzero(clf.coef_)} of {clf.coef_.size}, "
        f"train accuracy {clf.score(X_train, y_train):.4f}, "
        f"test accuracy {clf.score(X_test, y_test):.4f}, staleness mean {staleness['mean']:.2f} "
        f"max {staleness['max']}, wall {wall:.1f} s"
    )
    return 0


def _bandwidth(text: str):
    return text if text == "auto" else float(text)


def add_parsers(sub) -> None:
    demo = sub.add_parser("demo", help="train an EigenPro classifier on real data and print its convergence")
    demo.add_argument(
        "--data",
        choices=["digits", "mnist"],
        default="digits",
        help="digits: bundled with scikit-learn (default); mnist: from --data-path",
    )
    demo.add_argument("--data-path", default=None, help="folder with mnist/ (default ../shared/data)")
    demo.add_argument("--n-train", type=int, default=None, help="use the first N MNIST training points")
    demo.add_argument("--kernel", default="laplacian")
    demo.add_argument("--bandwidth", type=_bandwidth, default="auto")
    demo.add_argument("--epochs", type=float, default=5)
    demo.add_argument("--evals-per-epoch", type=int, default=1)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--plot", default=None, help="write a convergence plot (PNG) to this path")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    sparse = sub.add_parser(
        "sparse-demo", help="train an L1 logistic regression by AsyB-ProxSGD and print its convergence"
    )
    sparse.add_argument(
        "--data",
        choices=["breast_cancer", "a9a", "news20"],
        default="breast_cancer",
        help="breast_cancer: bundled with scikit-learn (default); a9a, news20: from --data-path",
    )
    sparse.add_argument("--data-path", default=None, help="folder with a9a/ and news20/ (default ../shared/data)")
    sparse.add_argument("--alpha", type=float, default=1e-3)
    sparse.add_argument("--epochs", type=float, default=10)
    sparse.add_argument("--backend", default="serial", choices=["serial", "threads", "processes"])
    sparse.add_argument("--workers", type=int, default=1)
    sparse.add_argument("--blocks", type=int, default=1)
    sparse.add_argument("--seed", type=int, default=0)
    sparse.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    sparse.set_defaults(run=_sparse_demo)
