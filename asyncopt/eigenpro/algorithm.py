"""EigenPro as an engine algorithm: the pure step and the additive server rule, nothing else."""

from __future__ import annotations

import dataclasses
import math

import torch

from asyncopt.eigenpro.preconditioner import Preconditioner
from asyncopt.eigenpro.step import KernelProblem, Update, apply_update, eigenpro_step, split_update
from asyncopt.errors import TrainingDiverged
from asyncopt.pickling import arrays_of


@dataclasses.dataclass
class EigenProAlgorithm:
    problem: KernelProblem
    precond: Preconditioner
    eta: float  # step size for a full batch of the schedule's batch size
    budget_bytes: int
    n_servers: int = 1  # row shards of alpha, for engines that place parameter servers (Ray)
    # the servers' rule adds each part in (apply_update): a replica that adds the same parts in the
    # same order holds the same rows, so Ray workers pull only the parts since their last pull
    additive = True

    passthrough_errors = (TrainingDiverged,)  # a diverging worker's error reaches fit as itself
    # a step must read whole updates: an update's batch rows without its Nystrom correction are an
    # unpreconditioned step in the top eigendirections (engines/snapshots.py reads whole versions)
    snapshot_reads = True

    @property
    def n_samples(self) -> int:
        return self.problem.n

    def init_params(self) -> torch.Tensor:
        Y = self.problem.Y
        return torch.zeros(Y.shape, dtype=Y.dtype, device=Y.device)

    def compute(self, params: torch.Tensor, batch: torch.Tensor, scale: float, key: int = 0) -> Update:
        batch = batch.to(self.problem.Y.device)
        return eigenpro_step(self.problem, self.precond, params, batch, self.eta * scale, self.budget_bytes)

    def apply(self, params: torch.Tensor, update: Update, staleness: int = 0) -> None:
        apply_update(params, _on(update, params.device), self.precond.indices)

    # -- parameter servers: row shards of alpha, each applying the additive rule to its rows -------
    @property
    def n_locks(self) -> int:
        return len(self._bounds()) - 1

    def _bounds(self) -> list[int]:
        n, S = self.problem.n, max(1, min(self.n_servers, self.problem.n))
        return [n * j // S for j in range(S + 1)]

    def server_rows(self, server: int) -> tuple[int, int]:
        bounds = self._bounds()
        return bounds[server], bounds[server + 1]

    def rows_read(self, rows) -> None:
        """A step reads every row of alpha (K(X_B, X) alpha): a worker pulls them all."""
        return None

    def touched_rows(self, update: Update) -> torch.Tensor:
        """The rows an update writes: its batch and the Nystrom subsample (for the write log)."""
        return torch.cat([update.rows.cpu(), self.precond.indices.cpu()])

    def touched_rows_cap(self, batch_size: int | None) -> int:
        return (batch_size or self.problem.n) + len(self.precond.indices)

    def server_parts(self, update: Update) -> list:
        """(server, part) pairs: the batch and subsample rows of each shard (step.split_update)."""
        return split_update(update, self.precond.indices, self._bounds())

    def for_servers(self) -> EigenProServerRule:
        """What a parameter server needs (engines that place servers apart: Ray): the weights' shape
        and the additive rule, not the kernel data (n x d) the workers compute with."""
        Y = self.problem.Y
        return EigenProServerRule(tuple(Y.shape), Y.dtype, self.precond.indices.cpu())

    def for_object_store(self) -> EigenProAlgorithm:
        """What Ray's object store holds for the workers: the kernel data, targets and preconditioner
        as numpy arrays, which the worker actors of a node read in place (pickling.py), where
        pickled tensors are copied into each. Read-only there: a step writes only its update."""
        data = arrays_of(self.problem.data, ("X", "sqnorm", "kept_columns", "dropped_values"))
        problem = arrays_of(dataclasses.replace(self.problem, data=data), ("Y",))
        precond = arrays_of(self.precond, ("indices", "V", "D"))
        return dataclasses.replace(self, problem=problem, precond=precond)

    def check(self, update: Update, step: int, samples: int) -> None:
        if not math.isfinite(update.residual_sq_sum):
            raise TrainingDiverged(
                f"training diverged at step {step} (sample {samples}): the residual became non-finite. "
                f"Lower step_size (now {self.eta:.4g}) or batch_size, or use dtype='float64'"
            )

    def to(self, device) -> EigenProAlgorithm:
        data, pre = self.problem.data, self.precond
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        options = dataclasses.replace(data.options, device=torch.device(device))
        new_data = dataclasses.replace(
            data,
            X=move(data.X),
            sqnorm=move(data.sqnorm),
            kept_columns=move(data.kept_columns),
            dropped_values=move(data.dropped_values),
            options=options,
        )
        new_pre = dataclasses.replace(pre, indices=move(pre.indices), V=move(pre.V), D=move(pre.D))
        return EigenProAlgorithm(
            KernelProblem(new_data, move(self.problem.Y)), new_pre, self.eta, self.budget_bytes, self.n_servers
        )

    def update_to(self, update: Update, device) -> Update:
        if update.rows.device == torch.device(device):
            return update
        return Update(
            update.rows.to(device),
            update.rows_delta.to(device),
            update.subsample_delta.to(device),
            update.residual_sq_sum,
        )

    # processes exchange plain arrays: pickled bytes, no shared-memory segment per update
    def update_to_numpy(self, update: Update):
        return (
            update.rows.cpu().numpy(),
            update.rows_delta.cpu().numpy(),
            update.subsample_delta.cpu().numpy(),
            update.residual_sq_sum,
        )

    def update_from_numpy(self, payload) -> Update:
        rows, rows_delta, sub_delta, res = payload
        device = self.problem.Y.device
        return Update(
            torch.as_tensor(rows, device=device),
            torch.as_tensor(rows_delta, device=device),
            torch.as_tensor(sub_delta, device=device),
            res,
        )

    # -- state: the additive rule keeps none beyond the weights ---------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, params: torch.Tensor) -> None:
        pass

    def saved_params(self, params: torch.Tensor) -> torch.Tensor:
        return params.detach().clone()

    def share_memory(self, pack=None) -> None:
        """Move the read-only tensors to shared memory once, so spawned workers map, not copy, them
        (`pack(tensors)`: the transport's way, one block; by default each on its own)."""
        data = self.problem.data
        state = (data.X, data.sqnorm, self.problem.Y, self.precond.V, self.precond.D, self.precond.indices)
        tensors = [t for t in state if t is not None]
        if pack is None:
            for t in tensors:
                t.share_memory_()
        else:
            pack(tensors)


@dataclasses.dataclass
class EigenProServerRule:
    """An EigenPro parameter server's rule without the data: it adds the parts pushed to it."""

    shape: tuple[int, int]
    dtype: torch.dtype
    subsample: torch.Tensor  # the Nystrom rows (a whole update's subsample part goes there)
    additive = True

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.shape, dtype=self.dtype)

    def apply(self, params: torch.Tensor, update, staleness: int = 0) -> None:
        apply_update(params, _on(update, params.device), self.subsample)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, params: torch.Tensor) -> None:
        pass


def _on(update, device):
    """`update` (a dataclass of tensors) with its tensors on `device` (a GPU worker's parts reach a
    CPU server; a server's parts reach a GPU worker's replica)."""
    moved = {f.name: getattr(update, f.name).to(device) for f in dataclasses.fields(update)
             if isinstance(getattr(update, f.name), torch.Tensor)}  # fmt: skip
    return dataclasses.replace(update, **moved)
