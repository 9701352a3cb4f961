"""The shmproc demo: a parallel numpy pipeline on a Pool, next to multiprocessing.Pool.

    python -m shmproc            (about 15 s)
    python -m shmproc --quick    (a few seconds)

Both pools get the same work, on the same machine, in the same run:

1. Tiles: each task renders a 512x512 float64 tile (2 MB) from a seed,
   denoises it (a 3x3 box filter), normalizes it and returns the processed
   tile with its statistics (a few ms of numpy per tile, so moving the
   tiles matters).  The parent checks every tile: shape, finite
   values, and for a sample, the exact result of the same pipeline run
   in-process.  A progress bar shows the shmproc run.
2. Scoring: 100,000 tiny tasks (a few arithmetic operations on a reading),
   sent one per dispatch (chunksize=1): the cost of the pool itself.

shmproc moves the tiles through shared memory (the parent gets read-only
views, no copy); multiprocessing.Pool pickles them through a pipe.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pathlib
import sys
import time

import numpy as np

from .pool import Pool

SIDE = 512


_RAMP = np.linspace(0.0, 1.0, SIDE)


def render(seed: int) -> np.ndarray:
    """A synthetic noisy image: a gradient, a bright band, and noise."""
    rng = np.random.default_rng(seed)
    img = rng.random((SIDE, SIDE))
    img += _RAMP[None, :] * 0.5 + _RAMP[:, None] * 0.25
    row = int(rng.integers(0, SIDE - 32))
    img[row:row + 32] += 2.0
    return img


def denoise(img: np.ndarray) -> np.ndarray:
    """3x3 box filter (two 3-tap passes) with edge padding."""
    p = np.pad(img, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9.0


def process_tile(seed: int):
    tile = denoise(render(seed))
    tile = (tile - tile.mean()) / tile.std()
    stats = (float(tile.max()), float((tile > 1.0).mean()))
    return seed, stats, tile


def score(reading: float) -> float:
    return reading * 0.75 + 1.5 if reading > 0.5 else reading * 1.25


def _check_tiles(results, seeds, sample):
    for (seed, stats, tile), want in zip(results, seeds):
        if seed != want or tile.shape != (SIDE, SIDE) or not np.isfinite(stats[0]):
            raise AssertionError(f"tile {want} arrived damaged")
    for k in sample:
        ref = process_tile(seeds[k])
        if not np.array_equal(results[k][2], ref[2]):
            raise AssertionError(f"tile {seeds[k]} differs from the in-process result")


def run_tiles(pool, seeds, progress: bool):
    t0 = time.perf_counter()
    if isinstance(pool, Pool):
        out = pool.map(process_tile, seeds, chunksize=1, progress=progress)
    else:
        out = pool.map(process_tile, seeds, chunksize=1)
    return out, time.perf_counter() - t0


def run_scores(pool, readings):
    t0 = time.perf_counter()
    out = pool.map(score, readings, chunksize=1)
    elapsed = time.perf_counter() - t0
    if out[:1000] != [score(r) for r in readings[:1000]] or len(out) != len(readings):
        raise AssertionError("scores differ")
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shmproc", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a few seconds)")
    ap.add_argument("--workers", type=int, default=None, help="workers per pool (default: CPUs)")
    ap.add_argument("--out", default=".", help="folder for the timeline PNG and Chrome trace "
                    "(default: here)")
    args = ap.parse_args(argv)
    out_dir = pathlib.Path(args.out).resolve()
    if not out_dir.is_dir():
        ap.error(f"--out {args.out}: no such folder")
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    workers = args.workers or len(os.sched_getaffinity(0))
    n_tiles = 100 if args.quick else 600
    n_scores = 20_000 if args.quick else 100_000
    seeds = list(range(n_tiles))
    readings = np.random.default_rng(0).random(n_scores).tolist()
    sample = [0, n_tiles // 2, n_tiles - 1]

    print(f"shmproc demo: {workers} workers per pool, start method {method}\n")
    print(f"1. {n_tiles} tiles of {SIDE}x{SIDE} float64 (2 MB each): render, denoise, "
          f"normalize; the tiles come back")
    print(f"2. {n_scores:,} tiny scoring tasks, one per dispatch (chunksize=1)\n")
    with Pool(workers, start_method=method) as pool:
        pool.map(process_tile, seeds[:workers])                     # warm up
        tiles, fast_tiles = run_tiles(pool, seeds, progress=True)
        timeline = pool.timeline()          # what each worker did during the tile pipeline
        _check_tiles(tiles, seeds, sample)
        del tiles
        fast_scores = run_scores(pool, readings)
    with mp.get_context(method).Pool(workers) as pool:
        pool.map(process_tile, seeds[:workers])
        tiles, slow_tiles = run_tiles(pool, seeds, progress=False)
        _check_tiles(tiles, seeds, sample)
        del tiles
        slow_scores = run_scores(pool, readings)
    print()

    mb = n_tiles * SIDE * SIDE * 8 / 1e6
    rows = [
        ("tiles (numpy pipeline)", f"{n_tiles / fast_tiles:,.0f} tiles/s",
         f"{n_tiles / slow_tiles:,.0f} tiles/s", slow_tiles / fast_tiles),
        ("  results moved", f"{mb / fast_tiles:,.0f} MB/s", f"{mb / slow_tiles:,.0f} MB/s",
         slow_tiles / fast_tiles),
        ("scoring, chunksize=1", f"{n_scores / fast_scores / 1e3:,.0f}k tasks/s",
         f"{n_scores / slow_scores / 1e3:,.0f}k tasks/s", slow_scores / fast_scores),
    ]
    w = max(len(r[0]) for r in rows)
    a = max(len(r[1]) for r in rows)
    b = max(len(r[2]) for r in rows)
    print(f"{'workload':<{w}}  {'shmproc.Pool':>{a}}  {'mp.Pool':>{b}}  {'speed-up':>8}")
    print(f"{'-' * w}  {'-' * a}  {'-' * b}  {'-' * 8}")
    for label, x, y, ratio in rows:
        print(f"{label:<{w}}  {x:>{a}}  {y:>{b}}  {ratio:>7.1f}x")
    print("\nevery tile was checked (and a sample matched the in-process pipeline bit for bit); "
          "every score matched")
    show_timeline(timeline, out_dir)
    return 0


def show_timeline(timeline, out_dir: pathlib.Path):
    """The tile pipeline's timeline: its summary, a Chrome trace and a PNG."""
    print(f"\nthe tile pipeline on shmproc's workers (pool.timeline()):\n")
    print(timeline.summary())
    trace = timeline.to_chrome_trace(out_dir / "shmproc-demo-trace.json")
    print(f"\nChrome trace (open in https://ui.perfetto.dev or chrome://tracing): {trace}")
    try:
        png = timeline.plot(out_dir / "shmproc-demo-timeline.png",
                            title="shmproc demo: the tile pipeline")
    except ImportError as exc:
        print(f"timeline picture: not drawn ({exc})")
    else:
        print(f"timeline picture: {png}")


if __name__ == "__main__":
    sys.exit(main())
