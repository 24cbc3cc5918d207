"""Intra-op threads of a CPU training rank: one thread against all cores, on an idle host and beside one
busy process, side by side in one run (why `rank_threads` uses one thread below 2,048 rows per step).

    .venv/bin/python bench/rank_threads.py [--batches 64,4096] [--rows 20000]

Each case trains the default model shape (19 inputs, 64 -> 32 -> 8, denoising loss) with Adam over an
in-memory tensor in a fresh process (OpenMP settles its thread pool once per process) and reports the
fastest of three passes. Last line: RESULT with one thread over all cores, idle and busy, per batch.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time

from seglib.platform.host import usable_cores


def rows_per_second(threads: int, batch: int, rows: int) -> float:
    """Fastest of three passes over `rows` random rows at `batch` rows per step on `threads` threads."""
    import torch

    from seglib.representation.models import AutoencoderSpec, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(AutoencoderSpec(input_dim=19, hidden_dims=(64, 32), embedding_dim=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.randn(rows, 19)
    best = 0.0
    for _ in range(3):
        started, done = time.perf_counter(), 0
        for first in range(0, rows - batch + 1, batch):
            loss, _ = model.training_loss(data[first : first + batch], 0.2, 1.0, 0.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += batch
        best = max(best, done / (time.perf_counter() - started))
    return best


def measure(threads: int, batch: int, rows: int) -> float:
    """`rows_per_second` in a fresh Python process."""
    code = (
        f"from bench.rank_threads import rows_per_second; print(rows_per_second({threads}, {batch}, {rows}))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(output.stdout.strip().splitlines()[-1])


def spin(seconds: float) -> None:
    """A busy process: what a Spark task, the JVM or a second job does to a rank's cores."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="64,4096")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    cores = usable_cores()
    ratios: dict[str, float] = {}
    print(f"{'batch':>6} | {'host':<5} | {'1 thread':>10} | {f'{cores} threads':>10} | ratio")
    for batch in (int(value) for value in args.batches.split(",")):
        rows = max(args.rows, 20 * batch)
        for host in ("idle", "busy"):
            busy = multiprocessing.Process(target=spin, args=(600.0,)) if host == "busy" else None
            if busy is not None:
                busy.start()
            try:
                one, many = measure(1, batch, rows), measure(cores, batch, rows)
            finally:
                if busy is not None:
                    busy.terminate()
                    busy.join()
            ratios[f"one_over_all_{host}_b{batch}"] = one / many
            print(f"{batch:>6} | {host:<5} | {one:>10,.0f} | {many:>10,.0f} | {one / many:.2f}")
    print("RESULT " + " ".join(f"{key}={value:.3f}" for key, value in ratios.items()))


if __name__ == "__main__":
    main()
