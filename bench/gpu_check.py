"""The measuring half of bench/gpu_check.sh (see there). Last line: RESULT with the figures."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from seglib.contract.config import load_config
from seglib.platform.session import open_session
from seglib.representation.models import AutoencoderSpec, build_model
from seglib.representation.rank_loop import TrainingPlan, train_rank_torch_distributed


def plain_loop(data: torch.Tensor, spec: AutoencoderSpec, epochs: int, batch_size: int) -> float:
    model = build_model(spec).to(data.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, started = 0, time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(data), device=data.device)
        for start in range(0, len(data), batch_size):
            batch = data[order[start : start + batch_size]]
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(batch), batch)
            loss.backward()
            optimizer.step()
            seen += len(batch)
    if data.is_cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: PyTorch {torch.__version__} sees no CUDA device")
    print(
        f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible; torch {torch.__version__}"
    )
    print(f"bfloat16 autocast: {torch.cuda.is_bf16_supported()}")
    spec = AutoencoderSpec(input_dim=args.columns, hidden_dims=(64, 32), embedding_dim=8)
    values = np.random.default_rng(7).normal(size=(args.rows, args.columns)).astype(np.float32)
    gpu_limit = plain_loop(torch.from_numpy(values).cuda(), spec, args.epochs, args.batch_size)
    cpu_limit = plain_loop(torch.from_numpy(values), spec, 1, args.batch_size)
    print(f"(a) plain loop on the GPU: {gpu_limit:,.0f} rows/s;  (c) on the CPU: {cpu_limit:,.0f} rows/s")

    root = Path(tempfile.mkdtemp(prefix="seg-gpu-check-"))
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), args.columns).cast(
        pa.list_(pa.float32())
    )
    for part, rows in enumerate(np.array_split(np.arange(args.rows), 8)):
        pq.write_table(
            pa.table({"features": column.slice(int(rows[0]), len(rows))}), root / f"part-{part}.parquet"
        )
    spark = open_session(load_config(None, ["spark.log_level=ERROR", f"storage.cache_dir={root / 'cache'}"]))
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, (root / "cache").as_uri())
    converter = make_spark_converter(spark.read.parquet(str(root / "part-*.parquet")), dtype="float32")
    plan = TrainingPlan(
        spec=spec,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=1e-3,
        seed=0,
        steps_per_epoch=math.ceil(args.rows / args.batch_size),
        feature_column="features",
        device="cuda",
    )
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    rates: dict[str, float] = {}
    for precision in ("auto", "float16"):  # auto: bfloat16 where supported; float16 runs the loss scaler
        result = train_rank_torch_distributed(
            dataclasses.replace(plan, precision=precision), converter, None, None
        )
        if result.error:
            raise SystemExit(f"gpu_check: seglib's training loop failed on the GPU:\n{result.error}")
        epochs = [epoch["rows_per_second"] for epoch in result.history]
        losses = [round(epoch["loss"], 4) for epoch in result.history]
        rates[result.precision] = float(np.mean(epochs[1:] if len(epochs) > 1 else epochs))
        print(
            f"(b) seglib rank loop on {result.device}, {result.precision}: {rates[result.precision]:,.0f} rows/s "
            f"(epochs {[round(e) for e in epochs]}, losses {losses})"
        )
    trainer = max(rates.values())

    horovod_rate = float("nan")
    import horovod.torch as hvd

    if hvd.cuda_built():
        from seglib.representation.launchers import HorovodSparkLauncher
        from seglib.representation.rank_loop import train_rank
        from seglib.representation.stage import raise_rank_failures

        workers = torch.cuda.device_count()
        distributed = TrainingPlan(
            **{
                **plan.__dict__,
                "steps_per_epoch": math.ceil(args.rows / (args.batch_size * workers)),
                "workers": workers,
            }
        )
        results = HorovodSparkLauncher("cuda").run(train_rank, (distributed, converter, None, None), workers)
        raise_rank_failures(results)
        chief = next(r for r in results if r.rank == 0)
        horovod_rate = float(np.mean([epoch["rows_per_second"] for epoch in chief.history[1:]]))
        print(f"(d) Horovod launcher on {workers} GPU(s): {horovod_rate:,.0f} rows/s")
    else:
        print("(d) skipped: this Horovod build has no CUDA support (HOROVOD_GPU_OPERATIONS=NCCL)")
    converter.delete()
    spark.stop()
    print(
        f"RESULT gpu_plain_rows_per_s={gpu_limit:.0f} gpu_trainer_rows_per_s={trainer:.0f} "
        f"trainer_over_plain_gpu={trainer / gpu_limit:.3f} gpu_over_cpu={gpu_limit / cpu_limit:.2f} "
        f"horovod_gpu_rows_per_s={horovod_rate:.0f} float16_scaled_rows_per_s={rates.get('float16', math.nan):.0f}"
    )


if __name__ == "__main__":
    main()
