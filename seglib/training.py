"""Code that runs on each Horovod rank. Top-level and importable; heavy imports stay inside."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any


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


def train_rank(plan: TrainingPlan, converter: Any) -> RankResult:
    """Train on this rank's Petastorm shard; rank 0 returns the serialized model.

    An exception is returned with its traceback instead of raised, so that the driver can show the
    real cause rather than Spark's "job has failed".
    """
    import horovod.torch as hvd

    hvd.init()
    try:
        return _train(plan, converter, hvd)
    except Exception:
        rank, size = hvd.rank(), hvd.size()
        # Shutting down makes the other ranks' pending collectives fail instead of waiting forever.
        hvd.shutdown()
        return RankResult(rank=rank, size=size, error=traceback.format_exc())


def _train(plan: TrainingPlan, converter: Any, hvd: Any) -> RankResult:
    import torch

    from seglib.model import Autoencoder, AutoencoderSpec, serialize

    torch.manual_seed(plan.seed)
    # Ranks share the machine's cores; one intra-op thread each avoids oversubscription.
    torch.set_num_threads(max(1, (torch.get_num_threads() // max(1, hvd.local_size()))))
    model = Autoencoder(AutoencoderSpec(plan.input_dim, plan.hidden_dims, plan.embedding_dim, plan.dropout))
    # Linear scaling of the learning rate with the number of workers (the global batch grows with it).
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.learning_rate * hvd.size())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    loss_fn = torch.nn.MSELoss()
    history: list[dict[str, float]] = []
    with converter.make_torch_dataloader(
        batch_size=plan.batch_size,
        cur_shard=hvd.rank(),
        shard_count=hvd.size(),
        num_epochs=None,  # endless: epochs are counted in steps so every rank takes the same number
        workers_count=plan.reader_workers,
        shuffling_queue_capacity=plan.shuffle_buffer,
        seed=plan.seed + hvd.rank(),
    ) as loader:
        batches = iter(loader)
        for epoch in range(plan.epochs):
            started = time.perf_counter()
            model.train()
            loss_sum, rows = 0.0, 0
            for _ in range(plan.steps_per_epoch):
                inputs = next(batches)[plan.feature_column].float()
                optimizer.zero_grad()
                loss = loss_fn(model(inputs), inputs)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * inputs.shape[0]
                rows += inputs.shape[0]
            mean_loss = float(hvd.allreduce(torch.tensor(loss_sum / max(rows, 1)), name=f"loss.{epoch}"))
            if not torch.isfinite(torch.tensor(mean_loss)):
                raise FloatingPointError(
                    f"training loss became {mean_loss} in epoch {epoch + 1}: lower train.learning_rate or check "
                    "customer_features for extreme values"
                )
            seconds = time.perf_counter() - started
            total_rows = float(hvd.allreduce(torch.tensor(float(rows)), name=f"rows.{epoch}", op=hvd.Sum))
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "seconds": seconds,
                    "rows_per_second": total_rows / seconds,
                }
            )
    payload = serialize(model) if hvd.rank() == 0 else None
    return RankResult(rank=hvd.rank(), size=hvd.size(), history=history, model_payload=payload)
