"""Launchers that run the per-rank training function on Spark executors, one entry per
`train.launcher` in `LAUNCHERS`: Horovod on Spark (the default) and Spark's TorchDistributor."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from seglib.contract.errors import TrainingError
from seglib.representation.rank_loop import RankResult, train_rank, train_rank_torch_distributed

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")


class Launcher(Protocol):
    """Runs a function on N workers and returns one result per worker (rank order)."""

    relays_rank_output: bool  # whether the ranks' own progress lines reach the driver's console

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]: ...


class HorovodSparkLauncher:
    """`horovod.spark.run`: one Spark task per rank; Gloo between them (NCCL for GPU tensors when
    Horovod was built with it). Rank output (the per-epoch progress) is relayed to the driver."""

    relays_rank_output = True
    DEFAULT_CYCLE_TIME_MS = "1"

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]:
        import horovod.spark

        # Petastorm 0.12 on pyarrow 14 warns on every read (legacy dataset API, see STACK.md).
        env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}
        # Horovod's background loop negotiates collectives once per cycle, which adds up to a cycle of
        # latency to every step's gradient allreduce, most of a step for customer-sized models; much
        # shorter cycles make the loop spin on cores the ranks need. 1 ms with the gradients in one group
        # was the best of 0.1, 0.5, 1, 2 and 5 ms (bench/train_throughput.py).
        env.setdefault("HOROVOD_CYCLE_TIME", self.DEFAULT_CYCLE_TIME_MS)
        return list(
            horovod.spark.run(fn, args=tuple(args), num_proc=num_proc, use_gloo=True, verbose=1, env=env)
        )


class TorchDistributorLauncher:
    """`pyspark.ml.torch.distributor.TorchDistributor`: Spark's own launcher (barrier tasks,
    torch.distributed over Gloo), the path Databricks recommends on runtimes without Horovod.
    It returns rank 0's result only; rank output stays in the executors' logs."""

    relays_rank_output = False

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]:
        from pyspark.ml.torch.distributor import TorchDistributor

        # use_gpu makes Spark schedule a GPU per task, so it follows train.device; auto asks for one
        # only where the cluster offers GPUs (spark.task.resource.gpu.amount is set).
        use_gpu = self.device == "cuda" or (self.device == "auto" and _cluster_offers_gpus())
        distributor = TorchDistributor(num_processes=num_proc, local_mode=False, use_gpu=use_gpu)
        return [distributor.run(fn, *args)]  # type: ignore[list-item]


def _cluster_offers_gpus() -> bool:
    from pyspark import SparkContext

    context = SparkContext.getOrCreate()
    return bool(context.getConf().get("spark.task.resource.gpu.amount", None))


LAUNCHERS: dict[str, tuple[Callable[[str], Launcher], Callable[..., RankResult]]] = {
    "horovod": (HorovodSparkLauncher, train_rank),
    "torch_distributor": (TorchDistributorLauncher, train_rank_torch_distributed),
}


def raise_rank_failures(results: list[RankResult]) -> None:
    failed = [result for result in results if result.error]
    if failed:
        details = "\n".join(
            f"--- rank {result.rank} of {result.size} ---\n{result.error}" for result in failed
        )
        raise TrainingError(f"training failed on {len(failed)} of {len(results)} ranks:\n{details}")
