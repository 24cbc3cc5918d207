"""Code that runs on each Horovod rank. Top-level and importable; heavy imports stay inside."""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a rank needs, decided once on the driver so that every rank agrees."""

    input_dim: int
    hidden_dims: tuple[int, ...]
    embedding_dim: int
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    steps_per_epoch: int  # the same on every rank, whatever its shard size: unequal counts deadlock allreduce
    feature_column: str
    reader_workers: int = 2
    shuffle_buffer: int = 4096


@dataclass
class RankResult:
    rank: int
    size: int
    history: list[dict[str, float]] = field(default_factory=list)
    model_payload: bytes | None = None  # rank 0 only
    error: str | None = None  # the rank's traceback when it failed


class Collectives(Protocol):
    """The few distributed operations the training loop needs, from Horovod or torch.distributed."""

    rank: int
    size: int
    local_size: int

    def prepare(self, model: Any, optimizer: Any) -> tuple[Any, Any]:
        """Same initial state on every rank; gradients averaged across ranks from here on."""
        ...

    def all_reduce_sum(self, value: float, name: str) -> float: ...

    def abort(self) -> None:
        """Leave the group so that the other ranks' pending collectives fail instead of hanging."""
        ...


class HorovodCollectives:
    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self._hvd = hvd
        self.rank, self.size, self.local_size = hvd.rank(), hvd.size(), hvd.local_size()

    def prepare(self, model: Any, optimizer: Any) -> tuple[Any, Any]:
        self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        return model, self._hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def all_reduce_sum(self, value: float, name: str) -> float:
        import torch

        return float(
            self._hvd.allreduce(torch.tensor(value, dtype=torch.float64), name=name, op=self._hvd.Sum)
        )

    def abort(self) -> None:
        self._hvd.shutdown()


class TorchDistributedCollectives:
    """torch.distributed with Gloo, as started by pyspark.ml.torch.distributor.TorchDistributor."""

    def __init__(self) -> None:
        import os

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        self._dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))

    def prepare(self, model: Any, optimizer: Any) -> tuple[Any, Any]:
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's parameters on construction and averages gradients in backward;
        # the optimizer is built before any step, so its (empty) state is the same everywhere.
        return DistributedDataParallel(model), optimizer

    def all_reduce_sum(self, value: float, name: str) -> float:
        import torch

        tensor = torch.tensor(value, dtype=torch.float64)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return float(tensor)

    def abort(self) -> None:
        self._dist.destroy_process_group()


def train_rank(plan: TrainingPlan, converter: Any) -> RankResult:
    """Horovod entry: train on this rank's Petastorm shard; rank 0 returns the serialized model."""
    return _run_rank(plan, converter, HorovodCollectives())


def train_rank_torch_distributed(plan: TrainingPlan, converter: Any) -> RankResult:
    """TorchDistributor entry: the same training loop over torch.distributed."""
    return _run_rank(plan, converter, TorchDistributedCollectives())


def _run_rank(plan: TrainingPlan, converter: Any, group: Collectives) -> RankResult:
    """An exception is returned with its traceback instead of raised, so that the driver can show the
    real cause rather than Spark's "job has failed"."""
    try:
        return _train(plan, converter, group)
    except Exception:
        group.abort()
        return RankResult(rank=group.rank, size=group.size, error=traceback.format_exc())


def _train(plan: TrainingPlan, converter: Any, group: Collectives) -> RankResult:
    import torch

    from seglib.model import Autoencoder, AutoencoderSpec, serialize

    torch.manual_seed(plan.seed)
    # Ranks share the machine's cores; split the intra-op threads between them.
    torch.set_num_threads(max(1, torch.get_num_threads() // max(1, group.local_size)))
    model = Autoencoder(AutoencoderSpec(plan.input_dim, plan.hidden_dims, plan.embedding_dim, plan.dropout))
    # Linear scaling of the learning rate with the number of workers (the global batch grows with it).
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.learning_rate * group.size)
    trained, optimizer = group.prepare(model, optimizer)
    loss_fn = torch.nn.MSELoss()
    history: list[dict[str, float]] = []
    with converter.make_torch_dataloader(
        batch_size=plan.batch_size,
        cur_shard=group.rank,
        shard_count=group.size,
        num_epochs=None,  # endless: epochs are counted in steps so every rank takes the same number
        workers_count=plan.reader_workers,
        shuffling_queue_capacity=plan.shuffle_buffer,
        seed=plan.seed + group.rank,
    ) as loader:
        batches = iter(loader)
        for epoch in range(plan.epochs):
            started = time.perf_counter()
            trained.train()
            loss_sum, rows = 0.0, 0
            for _ in range(plan.steps_per_epoch):
                inputs = next(batches)[plan.feature_column].float()
                optimizer.zero_grad()
                loss = loss_fn(trained(inputs), inputs)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * inputs.shape[0]
                rows += inputs.shape[0]
            total_rows = group.all_reduce_sum(float(rows), f"rows.{epoch}")
            mean_loss = group.all_reduce_sum(loss_sum, f"loss.{epoch}") / max(total_rows, 1.0)
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"training loss became {mean_loss} in epoch {epoch + 1}: lower train.learning_rate or check "
                    "customer_features for extreme values"
                )
            seconds = time.perf_counter() - started
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "seconds": seconds,
                    "rows_per_second": total_rows / seconds,
                }
            )
    payload = serialize(model) if group.rank == 0 else None
    return RankResult(rank=group.rank, size=group.size, history=history, model_payload=payload)
