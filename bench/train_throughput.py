"""Training throughput: seglib's Horovod + Petastorm trainer against a plain PyTorch loop, side by side.

    .venv/bin/python bench/train_throughput.py [--rows 1000000] [--columns 32] [--epochs 3] [--batch-size 1024]

The same model (the default layer sizes, 32 -> 64 -> 32 -> 8, with the plain reconstruction loss on
both sides: no input masking) on the same float data, in one run:
(a) a plain PyTorch loop over an in-memory tensor on all cores: the limit on this machine;
(b) seglib's trainer, `horovod.spark.run` with Petastorm shards, on 1 and 2 workers: the shards are
    read once and kept in memory (train.shard_cache_mib);
(c) the same trainer streaming every epoch from Petastorm (shard cache off), the naive way.
Rows/second of (b) and (c) are the mean of the training epochs as the ranks measure them (the data
loading before the first epoch and the Spark/Horovod start are printed separately).
The limit is measured before and after the trainers; the higher is used.
Last line: RESULT with the ratios to the limit.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from seglib.contract.config import load_config
from seglib.platform.session import open_session
from seglib.representation.launchers import HorovodSparkLauncher
from seglib.representation.models import AutoencoderSpec, build_model
from seglib.representation.rank_loop import TrainingPlan, train_rank
from seglib.representation.stage import raise_rank_failures


def plain_loop(data: torch.Tensor, spec: AutoencoderSpec, epochs: int, batch_size: int, rate: float) -> float:
    """The limit: shuffled mini-batches of an in-memory tensor through the same model and optimizer."""
    torch.manual_seed(0)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=rate)
    loss_fn = torch.nn.MSELoss()
    seen, started = 0, time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for start in range(0, len(data), batch_size):
            batch = data[order[start : start + batch_size]]
            optimizer.zero_grad()
            loss = loss_fn(model(batch), batch)
            loss.backward()
            optimizer.step()
            seen += len(batch)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--cases", default="1w,2w,stream", help="which trainer runs: 1w, 2w, stream")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    root = Path(tempfile.mkdtemp(prefix="seg-bench-train-"))
    spec = AutoencoderSpec(input_dim=args.columns, hidden_dims=(64, 32), embedding_dim=8)
    rate = 1e-3

    values = np.random.default_rng(7).normal(size=(args.rows, args.columns)).astype(np.float32)
    limit_before = plain_loop(torch.from_numpy(values), spec, args.epochs, args.batch_size, rate)
    print(
        f"(a) plain PyTorch loop, in-memory tensor, {torch.get_num_threads()} threads: {limit_before:,.0f} rows/s"
    )

    column = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), args.columns).cast(
        pa.list_(pa.float32())
    )
    for part, rows in enumerate(np.array_split(np.arange(args.rows), 16)):
        table = pa.table({"features": column.slice(int(rows[0]), len(rows))})
        pq.write_table(table, root / f"part-{part:02d}.parquet")
    config = load_config(None, ["spark.log_level=ERROR", f"storage.cache_dir={root / 'cache'}"])
    spark = open_session(config)
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, (root / "cache").as_uri())
    converter = make_spark_converter(spark.read.parquet(str(root / "part-*.parquet")), dtype="float32")

    def trainer(workers: int, cache: bool) -> float:
        plan = TrainingPlan(
            spec=spec,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=rate / workers,  # the same effective rate as the plain loop
            seed=0,
            steps_per_epoch=math.ceil(args.rows / (args.batch_size * workers)),
            feature_column="features",
            shard_cache_bytes=(4 << 30) if cache else 0,
            progress=False,
        )
        started = time.perf_counter()
        results = HorovodSparkLauncher().run(train_rank, (plan, converter, None, None), workers)
        wall = time.perf_counter() - started
        raise_rank_failures(results)
        chief = next(result for result in results if result.rank == 0)
        rate_per_epoch = [epoch["rows_per_second"] for epoch in chief.history]
        training = sum(epoch["seconds"] for epoch in chief.history)
        label = "in-memory shards" if cache else "streaming Petastorm"
        print(
            f"    {workers} worker(s), {label}: {np.mean(rate_per_epoch):,.0f} rows/s "
            f"(epochs {', '.join(f'{r:,.0f}' for r in rate_per_epoch)}); wall {wall:.1f}s of which "
            f"training {training:.1f}s, start and shard loading {wall - training:.1f}s"
        )
        return float(np.mean(rate_per_epoch))

    print("(b) seglib trainer (horovod.spark.run + Petastorm):")
    nan = float("nan")
    cached_1w = trainer(1, cache=True) if "1w" in cases else nan
    cached_2w = trainer(2, cache=True) if "2w" in cases else nan
    print("(c) naive Petastorm streaming (shard cache off):")
    streaming_1w = trainer(1, cache=False) if "stream" in cases else nan
    converter.delete()
    spark.stop()
    # This machine is shared: the limit is measured before and after the trainers and the better of the
    # two is used, so that noise can only lower the trainer's ratios.
    limit_after = plain_loop(torch.from_numpy(values), spec, args.epochs, args.batch_size, rate)
    limit = max(limit_before, limit_after)
    print(f"(a) plain loop again after the trainers: {limit_after:,.0f} rows/s; limit = {limit:,.0f} rows/s")
    print(f"{args.rows:,} rows x {args.columns} floats, batch {args.batch_size}, {args.epochs} epochs")
    print(
        f"trainer / limit: 1 worker {cached_1w / limit:.2f}, 2 workers {cached_2w / limit:.2f}; "
        f"streaming 1 worker {streaming_1w / limit:.2f}"
    )
    print(
        f"RESULT trainer_over_limit_1w={cached_1w / limit:.3f} trainer_over_limit_2w={cached_2w / limit:.3f} "
        f"streaming_over_limit_1w={streaming_1w / limit:.3f} limit_rows_per_s={limit:.0f}"
    )


if __name__ == "__main__":
    main()
