"""What engines that place the parameter servers apart (Ray) ask of AsyB-ProxSGD (a part of
ProxSGDAlgorithm): which servers share a process, a server's own copy of the rule (and, for sample
bundles, its columns of X), the rows a worker pulls, and tasks of many batches as one message a
server (bundles.py: computed by the worker, split by server, applied in order)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm


class ServerPlacement:
    """ProxSGDAlgorithm's parts for servers placed apart; its fields and kernels' arguments
    (`_task_args`, `_numpy_views`, `server_rows`) are the algorithm's (algorithm.py)."""

    @property
    def bundles(self) -> bool:
        """A task's updates travel as bundles (compute_bundle / bundle_parts / apply_bundle): the
        compiled task kernels apply (`fused`), with eager updates."""
        return self.fused and self._lazy_state is None

    @property
    def sample_bundles(self) -> bool:
        """Bundles carry samples and coefficients, not gradient pairs (`bundle_pushes`): with "auto",
        where a sample has more than one entry in a block on average (a pair and a sample cost about
        the same bytes, 8 for the number and 8 a column of the coefficient or value)."""
        if self.bundle_pushes not in ("auto", "samples", "pairs"):
            raise ValueError(f"bundle_pushes={self.bundle_pushes!r}: expected 'auto', 'samples' or 'pairs'")
        if not self.bundles or self.bundle_pushes == "pairs" or not self.problem.data.sparse:
            return False  # (dense rows: a block's pairs are its columns, summed by the worker)
        data = self.problem.data
        per_block = data.nnz / max(1, data.n) / self.problem.n_blocks
        return self.bundle_pushes == "samples" or per_block > 1.0

    def compute_bundle(self, params: torch.Tensor, task, staleness: int):
        """The task's updates, each applied to `params` (the worker's copy) before the next batch reads
        it, with the step of `staleness` (the servers' last count for this worker)."""
        from asyncopt.proxsgd import bundles

        worker, server = self.task_args(params, task)
        if self.sample_bundles:
            status, bundle = bundles.compute_sample_bundle(worker, server, task, staleness)
        else:
            status, bundle = bundles.compute_bundle(worker, server, task, staleness)
        if status:
            self.task_failed(status)
        return bundle

    def for_object_store(self) -> ProxSGDAlgorithm:
        """What Ray's object store holds for the workers: this algorithm (pickled as for any worker),
        its data's arrays as numpy arrays, which the worker actors of a node read in place
        (LinearData.for_object_store)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.problem = dataclasses.replace(self.problem, data=self.problem.data.for_object_store())
        return copy

    def for_servers(self) -> ProxSGDAlgorithm:
        """What a parameter server needs (engines that place servers apart: Ray): the rule (step,
        penalty, blocks, SVRG mean) over data of no rows, of the same width, precision and layout
        (the same compiled kernels), not the n samples the workers compute with."""
        import scipy.sparse as sp

        from asyncopt.proxsgd.data import LinearData

        data = self.problem.data
        no_rows = sp.csr_matrix((0, data.d)) if data.sparse else np.zeros((0, data.d))
        empty = LinearData.from_array(no_rows, np.zeros((0, self.problem.k)), dtype=data.dtype, device=data.device)
        # (the bundles' kind is decided from the samples, which the copy has none of)
        kind = "samples" if self.sample_bundles else "pairs"
        server = dataclasses.replace(self, problem=dataclasses.replace(self.problem, data=empty), bundle_pushes=kind)
        server.step, server.step_cap, server.delay_unit = self.step, self.step_cap, self.delay_unit
        if self.variance_reduction:
            server._snap_mu.copy_(self._snap_mu)
        return server

    def for_server(self, server: int) -> ProxSGDAlgorithm:
        """Server `server`'s copy: `for_servers`, and, where bundles carry samples, the block's columns
        of X (CSR over all samples, global column numbers): what it forms its pairs from. Each block
        server holds its block's columns, so the servers together hold X once."""
        copy = self.for_servers()
        if self.sample_bundles and server < self.problem.n_blocks:
            copy._server_columns = (server, *self._block_columns(*self.server_rows(server)))
        return copy

    def _block_columns(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, values) of X[:, lo:hi] as CSR over every sample, columns numbered as in X,
        each row's entries in X's order (so the pairs formed from it come in the worker's order)."""
        from asyncopt.proxsgd import fast

        v = self._numpy_views()
        return fast.csr_column_range(v["indptr"], v["indices"], v["values"], lo, hi)

    def _columns_of(self, server: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The columns a server's sample bundles are formed from: its own (`for_server`), or X itself."""
        own = getattr(self, "_server_columns", None)
        if own is not None and own[0] == server:
            return own[1:]
        if server == self.intercept_server:
            return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, self._scratch_layout[1])
        if self.problem.data.n == 0:  # (a server's copy without its columns would apply nothing)
            raise RuntimeError(f"server {server} has no columns of X to form its pairs from: build it with for_server")
        v = self._numpy_views()
        return v["indptr"], v["indices"], v["values"]

    def warm_bundles(self, side: str) -> None:
        """Load (or compile: ~10 s a kernel, once) the bundle kernel of `side` ("worker": compute,
        "server": apply) now, in a Ray actor's start, not in its first task."""
        if self.bundles:
            from asyncopt.proxsgd import bundles

            empty = np.zeros(0, dtype=np.int64)
            params = self.init_params()
            worker, server = self._task_args(params, self.batch_size, 0)
            no_task = _NoBatches(empty, empty, empty, self.batch_size)
            if not self.sample_bundles:
                _, bundle = bundles.compute_bundle(worker, server, no_task, 0, compile_only=side != "worker")
                if side == "server":
                    bundles.apply_bundle(server, 0, bundle, 0)
            elif side == "worker":
                bundles.compute_sample_bundle(worker, server, no_task, 0)
            else:
                k, dtype = self._scratch_layout
                nothing = bundles.SampleBundle(empty, np.zeros(1, np.int64), empty, np.zeros((0, k), dtype),
                                               np.zeros((0, k), dtype), self.batch_size)  # fmt: skip
                own = getattr(self, "_server_columns", None)
                at = own[0] if own is not None else self.intercept_server
                bundles.apply_sample_bundle(server, at, self._columns_of(at), nothing, 0)

    def bundle_parts(self, bundle) -> list[tuple[int, object, np.ndarray]]:
        """(server, bundle, the task's updates in it) triples: each block's server gets the updates of
        its block (all of them for full pushes) with their pairs in its rows; the intercept server
        all of them, without pairs."""
        from asyncopt.proxsgd.bundles import SampleBundle

        samples = isinstance(bundle, SampleBundle)
        parts = []
        for b in range(self.problem.n_blocks):
            updates = np.flatnonzero((bundle.blocks == b) | (bundle.blocks == -1))
            if len(updates):
                part = bundle.select(updates) if samples else bundle.select(updates, *self.server_rows(b))
                parts.append((b, part, updates))
        if self.problem.fit_intercept:
            d, every = self.problem.data.d, np.arange(len(bundle))
            part = bundle.select(every, samples=False) if samples else bundle.select(every, d, d)
            parts.append((self.intercept_server, part, every))
        return parts

    def apply_bundle(self, params: torch.Tensor, server: int, bundle, staleness: int) -> None:
        """Server `server`'s rule for each update of `bundle`, in order, at the step of `staleness`."""
        from asyncopt.proxsgd import bundles

        _, server_args = self._task_args(params, bundle.round_batch, len(bundle))
        if isinstance(bundle, bundles.SampleBundle):
            bundles.apply_sample_bundle(server_args, server, self._columns_of(server), bundle, staleness)
        else:
            bundles.apply_bundle(server_args, server, bundle, staleness)

    def server_delay(self, server: int, count: int) -> int:
        """The staleness of an update from what server `server` counted since the read (Ray: each
        server has its own clock). The delay rule counts the updates applied anywhere: the intercept
        server and a full push's servers see every update; a block server sees those of its block,
        about 1/M of them, so M times its count is the estimate."""
        if self.push == "block" and server < self.problem.n_blocks:
            return count * self.problem.n_blocks
        return count

    def rows_read(self, rows: np.ndarray) -> np.ndarray | None:
        """The parameter rows a step on the samples `rows` reads (sorted): for sparse data, the
        columns those samples touch and the intercept row; None (all of them) for dense data, a
        smooth regularizer (its gradient reads the whole block) or data off the CPU. What a Ray
        worker pulls."""
        problem = self.problem
        if not problem.data.sparse or problem.regularizer.strength or problem.data.device.type != "cpu":
            return None
        from asyncopt.proxsgd import fast

        v, d = self._numpy_views(), problem.data.d
        mark = getattr(self, "_read_marks", None)  # (scratch: False between calls)
        if mark is None or mark.shape[0] != d + 1:
            mark = self._read_marks = np.zeros(d + 1, dtype=np.bool_)
        # one compiled pass over the entries, sorting only the columns found (numpy's mask over d and
        # gathers took 3.6-6.5 ms a task of 2048 news20 samples in a Ray worker)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        return fast.csr_columns_read(v["indptr"], v["indices"], rows, mark, d, bool(problem.fit_intercept))

    def read_entries(self, rows: np.ndarray) -> int | None:
        """The entries of the samples `rows` (sparse data on the CPU: what finding `rows_read` costs a
        pass over); None otherwise."""
        problem = self.problem
        if not problem.data.sparse or problem.data.device.type != "cpu":
            return None
        indptr = self._numpy_views()["indptr"]
        rows = np.asarray(rows, dtype=np.int64)
        return int((indptr[rows + 1] - indptr[rows]).sum())

    def server_placement(self) -> list[list[int]]:
        """The servers one process hosts where servers are processes of their own (Ray): the
        intercept server with block 0. The intercept is in every push, so a push to block 0 is then
        one message, and a full push one per block: a task costs one call less each way."""
        servers = [[b] for b in range(self.problem.n_blocks)]
        if self.problem.fit_intercept:
            servers[0].append(self.problem.n_blocks)
        return servers


@dataclasses.dataclass
class _NoBatches:  # (a task's fields, for warm_bundles: the engines' Task is not imported here)
    rows: np.ndarray
    sizes: np.ndarray
    keys: np.ndarray
    round_batch: int
