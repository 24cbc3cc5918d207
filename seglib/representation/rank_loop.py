"""Code that runs on each training rank (Horovod or torch.distributed). Top-level and importable;
heavy imports stay inside the functions."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import math
import os
import socket
import sys
import time
import traceback
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from seglib.platform.host import usable_cores

if TYPE_CHECKING:
    # Not at run time: a RankResult is unpickled in the Spark task that launched the rank, and that
    # process must not import torch (seglib.representation.models) for it (2-3 s at the end of every run).
    from seglib.representation.models import AutoencoderSpec, IdecAutoencoder

CHECKPOINT_PATTERN = "epoch-{epoch:04d}.pt"
CHECKPOINTS_KEPT = 2
IDEC_STARTS = 10  # k-means starts for IDEC's centres
IDEC_START_ITERATIONS = 50
LOAD_BATCH_ROWS = 4096


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a rank needs, decided once on the driver so that every rank agrees."""

    spec: AutoencoderSpec
    epochs: int
    batch_size: int
    learning_rate: float  # per worker; the ranks scale it by their number after the warm-up
    seed: int
    steps_per_epoch: int  # the same on every rank, whatever its shard size: unequal counts deadlock allreduce
    feature_column: str
    workers: int = 1  # the ranks the launcher starts
    warmup_epochs: int = 0
    patience: int = 10
    min_delta: float = 1e-4
    corruption: float = 0.0
    vae_beta: float = 1.0
    idec_epochs: int = 0
    idec_weight: float = 0.1
    idec_tolerance: float = 0.001
    forecast_weight: float = 0.0
    reader_workers: int = 2
    shuffle_buffer: int = 4096
    shard_cache_bytes: int = 2 << 30
    checkpoint_uri: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    progress: bool = True


@dataclass
class RankResult:
    rank: int
    size: int
    history: list[dict[str, Any]] = field(default_factory=list)
    model_payload: bytes | None = None  # rank 0 only
    error: str | None = None  # the rank's traceback when it failed
    shard_rows: int = -1  # rows in this rank's shard (-1: streamed, not counted)
    steps: int = 0  # optimizer steps this rank took
    in_memory: bool = False
    device: str = "cpu"
    precision: str = "float32"
    resumed_from_epoch: int = 0
    ranks_on_host: int = 1  # ranks sharing this rank's host, which split its cores
    threads: int = 0  # torch intra-op threads of this rank (0: a GPU rank, not set)


class Collectives(Protocol):
    """The few distributed operations the training loop needs, from Horovod or torch.distributed."""

    rank: int
    size: int
    local_rank: int  # this rank's GPU on its host
    local_size: int  # ranks on this rank's host

    def check_device(self, device: Any) -> None:
        """Refuse a device the communication backend cannot reduce on, with the fix."""
        ...

    def prepare(self, module: Any, optimizer: Any, device: Any) -> tuple[Any, Any]:
        """Same initial state on every rank; gradients averaged across ranks from here on."""
        ...

    def all_reduce_sum(self, value: float, name: str) -> float: ...

    def step(self, optimizer: Any, scaler: Any | None) -> None:
        """One optimizer step on the averaged gradients; through the float16 loss scaler when given."""
        ...

    def broadcast_(self, tensor: Any, name: str) -> None:
        """Overwrite `tensor` on every rank with rank 0's values."""
        ...

    def abort(self) -> None:
        """Leave the group so that the other ranks' pending collectives fail instead of hanging."""
        ...


class HorovodCollectives:
    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self._hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()

    def check_device(self, device: Any) -> None:
        if device.type == "cuda" and not self._hvd.cuda_built():
            raise RuntimeError(
                "this Horovod build has no CUDA support, so it cannot reduce GPU gradients: rebuild it with "
                "HOROVOD_GPU_OPERATIONS=NCCL (see deploy/README.md) or set train.device=cpu"
            )

    def prepare(self, module: Any, optimizer: Any, device: Any) -> tuple[Any, Any]:
        self._hvd.broadcast_parameters(module.state_dict(), root_rank=0)
        self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        # One group: every gradient of a step is negotiated and reduced together, once, instead of in as
        # many rounds as the background cycles that the backward pass spans (bench/train_throughput.py).
        return module, self._hvd.DistributedOptimizer(
            optimizer, named_parameters=module.named_parameters(), groups=1
        )

    def all_reduce_sum(self, value: float, name: str) -> float:
        import torch

        return float(
            self._hvd.allreduce(torch.tensor(value, dtype=torch.float64), name=name, op=self._hvd.Sum)
        )

    def step(self, optimizer: Any, scaler: Any | None) -> None:
        if scaler is None:
            optimizer.step()
            return
        # The scaler must read the averaged gradients: wait for the allreduces, then unscale and step
        # without a second synchronisation. Every rank sees the same gradients, so the same overflow
        # verdict, and all skip or take the step together.
        optimizer.synchronize()
        scaler.unscale_(optimizer)
        with optimizer.skip_synchronize():
            scaler.step(optimizer)
        scaler.update()

    def broadcast_(self, tensor: Any, name: str) -> None:
        self._hvd.broadcast_(tensor, root_rank=0, name=name)

    def abort(self) -> None:
        self._hvd.shutdown()


class TorchDistributedCollectives:
    """torch.distributed as started by pyspark.ml.torch.distributor.TorchDistributor: Gloo for CPU
    tensors, NCCL for CUDA ones."""

    def __init__(self) -> None:
        import os

        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        self._dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        # The GPU index within the devices Spark made visible to this task.
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        # Not LOCAL_WORLD_SIZE: TorchDistributor starts one torchrun per Spark task, each with a local
        # world of 1, so two ranks on one host each took all its cores and ran at a third of the speed
        # of two ranks with half each (bench/train_throughput.py).
        hosts = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        dist.all_gather(hosts, torch.tensor([host_key(socket.gethostname())], dtype=torch.int64))
        self.local_size = ranks_sharing_host([int(key) for key in hosts], self.rank)

    def check_device(self, device: Any) -> None:
        return None

    def prepare(self, module: Any, optimizer: Any, device: Any) -> tuple[Any, Any]:
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's parameters on construction and averages gradients in backward;
        # a resumed optimizer state was loaded from the same checkpoint on every rank.
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids), optimizer

    def all_reduce_sum(self, value: float, name: str) -> float:
        import torch

        tensor = torch.tensor(value, dtype=torch.float64)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return float(tensor)

    def step(self, optimizer: Any, scaler: Any | None) -> None:
        # DDP averaged the gradients during backward.
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

    def broadcast_(self, tensor: Any, name: str) -> None:
        self._dist.broadcast(tensor, src=0)

    def abort(self) -> None:
        self._dist.destroy_process_group()

    def close(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def train_rank(plan: TrainingPlan, train_data: Any, validation_data: Any, resume: bytes | None) -> RankResult:
    """Horovod entry: train on this rank's Petastorm shard; rank 0 returns the serialized model."""
    return _run_rank(plan, train_data, validation_data, resume, HorovodCollectives())


def train_rank_torch_distributed(
    plan: TrainingPlan, train_data: Any, validation_data: Any, resume: bytes | None
) -> RankResult:
    """TorchDistributor entry: the same training loop over torch.distributed."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker process of its own, not a test's process
        atexit.register(end_torchrun_worker_without_native_teardown)
    group = TorchDistributedCollectives()
    try:
        return _run_rank(plan, train_data, validation_data, resume, group)
    finally:
        # A Gloo group left open aborted a rank at exit (see end_torchrun_worker_without_native_teardown).
        group.close()


def end_torchrun_worker_without_native_teardown() -> None:
    """Exit a torchrun worker once its result is written, skipping the native libraries' static teardown.

    TorchDistributor's worker script writes the rank's result and then lets the interpreter finalize.
    In two of nine runs here, that teardown aborted rank 0 ("terminate called without an active
    exception", SIGABRT, after its result file was complete), and torchrun's other agent then waited
    out its 300 s exit barrier before the training call returned. Registered with atexit, this runs
    after the script, flushes what Python buffers and ends the process with the status the script
    earned (1 after an uncaught exception, as the interpreter would; the rank's own failures travel in
    its result)."""
    status = 1 if getattr(sys, "last_value", None) is not None else 0
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _run_rank(
    plan: TrainingPlan, train_data: Any, validation_data: Any, resume: bytes | None, group: Collectives
) -> RankResult:
    """An exception is returned with its traceback instead of raised, so that the driver can show the
    real cause rather than Spark's "job has failed"."""
    try:
        return _train(plan, train_data, validation_data, resume, group)
    except Exception:
        group.abort()
        return RankResult(rank=group.rank, size=group.size, error=traceback.format_exc())


# ---------------------------------------------------------------------------------------------- data


def load_shard(converter: Any, plan: TrainingPlan, rank: int, size: int, limit_bytes: int) -> Any | None:
    """One pass over this rank's Petastorm shard into one tensor; None when it outgrows `limit_bytes`."""
    import torch

    parts: list[Any] = []
    held = 0
    with converter.make_torch_dataloader(
        batch_size=LOAD_BATCH_ROWS,
        cur_shard=rank,
        shard_count=size,
        num_epochs=1,
        workers_count=plan.reader_workers,
        shuffling_queue_capacity=0,
    ) as loader:
        for batch in loader:
            rows = batch[plan.feature_column].float()
            held += rows.element_size() * rows.nelement()
            if held > limit_bytes:
                return None
            parts.append(rows)
    if not parts:
        from seglib.representation.models import training_row_width

        return torch.zeros((0, training_row_width(plan.spec)))
    return torch.cat(parts)


class InMemoryBatches:
    """Batches drawn from a shard held in memory: a fresh permutation per epoch, wrapping around so
    that a small shard still yields `steps_per_epoch` batches."""

    def __init__(self, rows: Any, plan: TrainingPlan, rank: int, device: Any) -> None:
        import torch

        if len(rows) == 0:
            raise RuntimeError(
                f"training shard {rank} is empty: the features have fewer Parquet row groups than workers; "
                "lower train.num_proc"
            )
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if rows.element_size() * rows.nelement() < free // 2:  # no host-to-device copy per step
                rows = rows.to(device)
        self._rows, self._plan = rows, plan
        self._generator = torch.Generator().manual_seed(plan.seed * 1_000 + rank)

    def epoch(self) -> Iterator[Any]:
        import torch

        needed = self._plan.steps_per_epoch * self._plan.batch_size
        count = len(self._rows)
        order = torch.cat(
            [torch.randperm(count, generator=self._generator) for _ in range(math.ceil(needed / count))]
        ).to(self._rows.device)
        for step in range(self._plan.steps_per_epoch):
            yield self._rows[order[step * self._plan.batch_size : (step + 1) * self._plan.batch_size]]


class StreamingBatches:
    """Batches streamed from Petastorm for shards too large for memory. The reader is endless:
    epochs are counted in steps so every rank takes the same number."""

    def __init__(
        self, converter: Any, plan: TrainingPlan, rank: int, size: int, stack: contextlib.ExitStack
    ) -> None:
        loader = stack.enter_context(
            converter.make_torch_dataloader(
                batch_size=plan.batch_size,
                cur_shard=rank,
                shard_count=size,
                num_epochs=None,
                workers_count=plan.reader_workers,
                shuffling_queue_capacity=plan.shuffle_buffer,
                seed=plan.seed + rank,
            )
        )
        self._batches, self._plan = iter(loader), plan

    def epoch(self) -> Iterator[Any]:
        for _ in range(self._plan.steps_per_epoch):
            yield next(self._batches)[self._plan.feature_column].float()


# ------------------------------------------------------------------------------------------ training


@dataclass
class TrainingState:
    """What a checkpoint holds besides the weights: enough to continue as if the run had not stopped."""

    epoch: int = 0  # completed epochs, pre-training and clustering together
    phase: str = "pretrain"  # pretrain -> idec (idec models only) -> done
    stopped: bool = False  # the current phase met its stopping rule
    best_loss: float = math.inf
    best_state: dict[str, Any] | None = None
    stale_epochs: int = 0
    idec_until: int = 0
    previous_assignments: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)


def choose_device(plan: TrainingPlan, local_rank: int) -> Any:
    import torch

    if plan.device == "cpu" or (plan.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but this worker sees no GPU; use train.device=auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def choose_precision(requested: str, device_type: str, bfloat16_supported: bool) -> str:
    """The autocast dtype: `auto` picks bfloat16 where the GPU has it, float16 (loss-scaled) on older GPUs
    and float32 on CPUs, whose float16/bfloat16 matrix products are rarely faster."""
    if requested != "auto":
        return requested
    if device_type != "cuda":
        return "float32"
    return "bfloat16" if bfloat16_supported else "float16"


def _autocast(device: Any, precision: str) -> Any:
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision))


def is_improvement(loss: float, best: float, min_delta: float) -> bool:
    return loss < best * (1.0 - min_delta) if math.isfinite(best) else math.isfinite(loss)


class _Run:
    """One rank's training: the epochs of each phase, validation, early stopping and checkpoints."""

    def __init__(
        self,
        plan: TrainingPlan,
        train_data: Any,
        validation_data: Any,
        resume: bytes | None,
        group: Collectives,
    ) -> None:
        import torch

        from seglib.representation.models import MODEL_KINDS, TrainingObjective, build_model

        self.plan, self.group = plan, group
        torch.manual_seed(plan.seed)
        self.device = choose_device(plan, group.local_rank)
        group.check_device(self.device)
        self.threads = use_device(self.device, group.local_size, plan.batch_size)
        self.model = build_model(plan.spec).to(self.device)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=plan.learning_rate)
        bfloat16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.precision = choose_precision(plan.precision, self.device.type, bfloat16)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "float16" else None
        self.state = TrainingState()
        if resume is not None:
            saved = torch.load(io.BytesIO(resume), map_location=self.device, weights_only=True)
            self.model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if self.scaler is not None and saved.get("scaler"):
                self.scaler.load_state_dict(saved["scaler"])
            self.state = TrainingState(**saved["state"])
        self.resumed_from = self.state.epoch
        self.objective, self.optimizer = group.prepare(
            TrainingObjective(self.model, plan.forecast_weight), optimizer, self.device
        )
        self.shard = load_shard(train_data, plan, group.rank, group.size, plan.shard_cache_bytes)
        self.stack = contextlib.ExitStack()
        self.batches: InMemoryBatches | StreamingBatches
        if self.shard is not None:
            self.batches = InMemoryBatches(self.shard, plan, group.rank, self.device)
        else:
            self.batches = StreamingBatches(train_data, plan, group.rank, group.size, self.stack)
        self.validation = None
        if validation_data is not None:
            held_out = load_shard(validation_data, plan, group.rank, group.size, 1 << 62)
            assert held_out is not None, "a shard without a size limit is always loaded"
            self.validation = held_out.to(self.device)
        self.total_epochs = plan.epochs + (
            plan.idec_epochs if "idec" in MODEL_KINDS[plan.spec.kind].phases else 0
        )
        self.steps = 0

    def run(self) -> RankResult:
        from seglib.representation.models import serialize

        with self.stack:
            if self.state.phase == "pretrain":
                self._epochs(until=self.plan.epochs)
                self._end_pretraining()
            if self.state.phase == "idec":
                if self.state.idec_until == 0:
                    self._start_clustering()
                self._epochs(until=self.state.idec_until)
        return RankResult(
            rank=self.group.rank,
            size=self.group.size,
            history=self.state.history,
            model_payload=serialize(self.model.cpu()) if self.group.rank == 0 else None,
            shard_rows=len(self.shard) if self.shard is not None else -1,
            steps=self.steps,
            in_memory=self.shard is not None,
            device=str(self.device),
            precision=self.precision,
            resumed_from_epoch=self.resumed_from,
            ranks_on_host=self.group.local_size,
            threads=self.threads,
        )

    def _epochs(self, until: int) -> None:
        while self.state.epoch < until and not self.state.stopped:
            record = self._train_epoch()
            if self.validation is not None:
                self._validate(record)
            self.state.history.append(record)
            self.state.stopped = self._should_stop(record)
            if self.group.rank == 0:
                if self.plan.progress:
                    _print_progress(record, self.state.history, self.total_epochs)
                if self.plan.checkpoint_uri:
                    self._checkpoint()

    def _train_epoch(self) -> dict[str, Any]:
        plan, group = self.plan, self.group
        epoch = self.state.epoch + 1
        started = time.perf_counter()
        cluster_weight = plan.idec_weight if self.state.phase == "idec" else 0.0
        loss_sum = reconstruction_sum = rows = 0.0
        self.objective.train()
        for step, inputs in enumerate(self.batches.epoch()):
            inputs = inputs.to(self.device, non_blocking=True)
            _set_learning_rate(
                self.optimizer, plan, group.size, self.state.epoch * plan.steps_per_epoch + step
            )
            self.optimizer.zero_grad()
            with _autocast(self.device, self.precision):
                loss, reconstruction = self.objective(inputs, plan.corruption, plan.vae_beta, cluster_weight)
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            group.step(self.optimizer, self.scaler)
            self.steps += 1
            loss_sum += float(loss.detach()) * len(inputs)
            reconstruction_sum += float(reconstruction.detach()) * len(inputs)
            rows += len(inputs)
        total_rows = group.all_reduce_sum(rows, f"rows.{epoch}")
        train_loss = group.all_reduce_sum(loss_sum, f"loss.{epoch}") / max(total_rows, 1.0)
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} in epoch {epoch}: the learning rate is too high for this "
                f"data (lower train.learning_rate, now {plan.learning_rate} per worker x {group.size} workers), "
                "or customer_features holds extreme values (check the catalog: seg features --describe)"
            )
        seconds = time.perf_counter() - started
        self.state.epoch = epoch
        return {
            "epoch": epoch,
            "phase": self.state.phase,
            "loss": train_loss,
            "reconstruction": group.all_reduce_sum(reconstruction_sum, f"recon.{epoch}")
            / max(total_rows, 1.0),
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": seconds,
            "rows_per_second": total_rows / seconds,
        }

    def _validate(self, record: dict[str, Any]) -> None:
        """Reconstruction error of the held-out customers, summed over the ranks so that every rank
        sees the same number and takes the same early-stopping decision."""
        import torch

        assert self.validation is not None
        self.model.eval()
        squared_error = 0.0
        assignments = []
        with torch.no_grad():
            for part in self.validation.split(LOAD_BATCH_ROWS):
                embeddings = self.model.encode(part)
                squared_error += float(((self.model.decode(embeddings) - part) ** 2).mean(dim=1).sum())
                if self.state.phase == "idec":
                    assignments.append(
                        self._clustering_model().soft_assignments(embeddings).argmax(dim=1).cpu()
                    )
        epoch = record["epoch"]
        rows = self.group.all_reduce_sum(float(len(self.validation)), f"val_rows.{epoch}")
        record["validation_loss"] = self.group.all_reduce_sum(squared_error, f"val_loss.{epoch}") / max(
            rows, 1.0
        )
        if self.state.phase == "idec":
            current = torch.cat(assignments) if assignments else torch.zeros(0, dtype=torch.long)
            previous = self.state.previous_assignments
            changed = float((current != previous).sum()) if previous is not None else float(len(current))
            self.state.previous_assignments = current
            record["assignment_change"] = self.group.all_reduce_sum(changed, f"changed.{epoch}") / max(
                rows, 1.0
            )

    def _should_stop(self, record: dict[str, Any]) -> bool:
        """Early stopping. Everything it reads was reduced across ranks, so every rank agrees."""
        if self.state.phase == "idec":
            return bool(record.get("assignment_change", 1.0) < self.plan.idec_tolerance)
        if "validation_loss" not in record:
            return False
        if is_improvement(record["validation_loss"], self.state.best_loss, self.plan.min_delta):
            self.state.best_loss = record["validation_loss"]
            self.state.best_state = {
                name: value.detach().clone() for name, value in self.model.state_dict().items()
            }
            self.state.stale_epochs = 0
            return False
        self.state.stale_epochs += 1
        return self.state.stale_epochs >= self.plan.patience

    def _end_pretraining(self) -> None:
        """Back to the weights of the best validation epoch; on to clustering for idec."""
        if self.state.best_state is not None:
            self.model.load_state_dict(self.state.best_state)
        self.state.best_state = None
        self.state.stopped = False
        from seglib.representation.models import next_phase

        self.state.phase = next_phase(self.plan.spec.kind, "pretrain")

    def _clustering_model(self) -> IdecAutoencoder:
        """The model of a kind with a clustering phase (only such kinds reach it)."""
        from seglib.representation.models import IdecAutoencoder

        assert isinstance(self.model, IdecAutoencoder), f"{self.plan.spec.kind} has no clustering phase"
        return self.model

    def _start_clustering(self) -> None:
        """IDEC's centres: k-means on rank 0's embeddings of its shard, broadcast to every rank.

        IDEC only sharpens the clusters it starts from, so one unlucky start (two personas under one
        centre) would be locked in by the clustering loss: the best of several starts is taken."""
        import torch

        from seglib.numerics.local_kmeans import best_local_kmeans

        if self.group.rank == 0:
            if self.shard is not None:
                sample = self.shard[:50_000]
            else:
                sample = torch.cat([batch for _, batch in zip(range(50), self.batches.epoch(), strict=False)])
            # A training row may carry the forecast task after the model inputs.
            inputs = sample[:, : self.plan.spec.input_dim]
            embedded = _embed(self.model, inputs.to(self.device)).cpu()
            centers = best_local_kmeans(
                embedded.double().numpy(),
                self.plan.spec.clusters,
                self.plan.seed,
                IDEC_STARTS,
                IDEC_START_ITERATIONS,
            )
            self._clustering_model().cluster_centers.data.copy_(torch.from_numpy(centers).to(self.device))
        self.group.broadcast_(self._clustering_model().cluster_centers.data, "cluster_centers")
        self.state.idec_until = self.state.epoch + self.plan.idec_epochs

    def _checkpoint(self) -> None:
        import dataclasses

        import torch

        from seglib.contract.uris import join_uri
        from seglib.platform.files import FsspecFiles

        buffer = io.BytesIO()
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "state": dataclasses.asdict(self.state),
            },
            buffer,
        )
        uri = self.plan.checkpoint_uri
        assert uri is not None
        files = FsspecFiles()
        files.write_bytes(join_uri(uri, CHECKPOINT_PATTERN.format(epoch=self.state.epoch)), buffer.getvalue())
        for old in files.list_names(uri)[:-CHECKPOINTS_KEPT]:
            files.delete(join_uri(uri, old))


def use_device(device: Any, ranks_on_host: int, batch_size: int) -> int:
    """Make `device` this process's: a CPU rank takes its intra-op threads (`rank_threads`, returned),
    a GPU rank its CUDA device (0 threads returned)."""
    import torch

    if device.type != "cpu":
        torch.cuda.set_device(device)
        return 0
    threads = rank_threads(ranks_on_host, batch_size)
    torch.set_num_threads(threads)
    return threads


def host_key(hostname: str) -> int:
    """A hostname as a number that a CPU collective can gather."""
    return zlib.crc32(hostname.encode())


def ranks_sharing_host(host_keys: list[int], rank: int) -> int:
    """How many ranks run on the host of `rank`, from every rank's `host_key` in rank order."""
    return host_keys.count(host_keys[rank])


# Below this many rows per step a CPU rank computes on one thread. A step's matrices are then too
# small for a second thread to pay (2 cores, idle: batch 64 67k rows/s on one thread, 58-62k on two;
# 512 and 1024 even; 2048 +10-40% for two), and OpenMP threads wait at every operation for the slowest
# of them: when anything else on the host takes a core (a Spark task, the JVM, a second job), the
# ranks' threads lose their turns and a step takes many times as long (the same model with one busy
# process beside it: 9.5k rows/s on two threads against 65k on one at batch 64; at 4096, 70k against 700k).
MULTITHREAD_MIN_BATCH = 2048


def rank_threads(local_size: int, batch_size: int) -> int:
    """Intra-op threads of one CPU rank: one for batches below `MULTITHREAD_MIN_BATCH`, else the cores
    this process may run on, shared by the ranks on its host. Not torch's default: Spark sets
    OMP_NUM_THREADS to spark.task.cpus (1) in its Python workers, which left a lone rank on a many-core
    host with one thread at any batch."""
    if batch_size < MULTITHREAD_MIN_BATCH:
        return 1
    cores = usable_cores()
    return max(1, cores // max(1, local_size))


def _train(
    plan: TrainingPlan, train_data: Any, validation_data: Any, resume: bytes | None, group: Collectives
) -> RankResult:
    return _Run(plan, train_data, validation_data, resume, group).run()


def _set_learning_rate(optimizer: Any, plan: TrainingPlan, workers: int, step: int) -> None:
    """Linear scaling with the worker count, reached by a linear warm-up (Goyal et al., 2017)."""
    target = plan.learning_rate * workers
    warmup_steps = plan.warmup_epochs * plan.steps_per_epoch
    rate = (
        target
        if step >= warmup_steps
        else plan.learning_rate + (target - plan.learning_rate) * step / warmup_steps
    )
    for group in optimizer.param_groups:
        group["lr"] = rate


def _embed(model: Any, rows: Any) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model.encode(part) for part in rows.split(LOAD_BATCH_ROWS)]) if len(rows) else rows


def _print_progress(record: dict[str, Any], history: list[dict[str, Any]], total_epochs: int) -> None:
    mean_seconds = sum(entry["seconds"] for entry in history) / len(history)
    remaining = max(0, total_epochs - record["epoch"]) * mean_seconds
    validation = f"  val {record['validation_loss']:.5f}" if "validation_loss" in record else ""
    print(
        f"[seglib train] epoch {record['epoch']:>3}/{total_epochs} {record['phase']:<8} "
        f"loss {record['loss']:.5f}{validation}  {record['rows_per_second']:,.0f} rows/s  "
        f"{record['seconds']:.1f}s  ETA <= {remaining:,.0f}s",
        flush=True,
    )
