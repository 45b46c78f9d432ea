"""Peak memory of the KDE CNN over a long memory-mapped stack versus a short one.

Writes a 10,000-frame 64x64 uint16 stack (contiguous, uncompressed, so :func:`open_stack`
memory-maps it) to a temporary folder: 100 simulated frames (1 emitter/um^2, sCMOS) repeated.
Then runs, each in a fresh Python process so that the peaks do not mix, the shipped KDE CNN
through the pipeline (``run_kde``: sum image only, no localizations, no kept KDEs) over the first
100 frames and over all frames, and reports each run's peak resident memory (``ru_maxrss``) and
time. Goal: the long run's peak at most 1.2x the short run's.

    OMP_NUM_THREADS=1 python benchmarks/bench_long_stack.py [--frames 10000] [--threads 1]
        [--out benchmarks/results/long_stack.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.2


def write_stack(path: Path, n_frames: int, size: int) -> None:
    """A contiguous uint16 stack of ``n_frames`` frames, written frame by frame."""
    import numpy as np
    import tifffile

    from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

    base = simulate_stack(100, SimulationConfig(size=(size, size), density=1.0),
                          seed=0).frames.astype(np.uint16)
    frames = (base[i % len(base)] for i in range(n_frames))
    tifffile.imwrite(path, frames, shape=(n_frames, size, size), dtype=np.uint16,
                     bigtiff=n_frames * size * size * 2 > 2**31, metadata={"axes": "TYX"})


def run_child(path: str, n_frames: int, threads: int, batch: int) -> dict:
    """Run the CNN over the first ``n_frames`` frames in this process; return the measurements."""
    import resource

    import torch

    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.io import open_stack
    from napari_smlm_diffusion.pipeline import KdeEngine, run_kde

    torch.set_num_threads(threads)
    engine = KdeEngine.load(device="cpu")
    with open_stack(path) as stack:
        start = time.perf_counter()
        result = run_kde(stack.data, preset("sCMOS"), engine, range(n_frames), batch,
                         localize=False)
        seconds = time.perf_counter() - start
        backend = stack.data.backend
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with open("/proc/self/statm") as handle:  # resident pages now (after the run)
        end_mb = int(handle.read().split()[1]) * resource.getpagesize() / 2**20
    return {"frames": n_frames, "peak_rss_mb": peak_kib / 1024, "end_rss_mb": end_mb,
            "seconds": seconds,
            "frames_per_s": n_frames / seconds, "backend": backend,
            "sum": float(result.sum_image.sum())}


def measure(path: Path, n_frames: int, threads: int, batch: int) -> dict:
    """One run in a fresh interpreter (its own peak RSS)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--frames", str(n_frames),
         "--threads", str(threads), "--batch", str(batch)],
        check=True, capture_output=True, text=True, env=env)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", metavar="STACK", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.frames, args.threads, args.batch)))
        return

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.tif"
        write_stack(path, args.frames, args.size)
        size_mb = path.stat().st_size / 2**20
        short = measure(path, args.short, args.threads, args.batch)
        long = measure(path, args.frames, args.threads, args.batch)
    ratio = long["peak_rss_mb"] / short["peak_rss_mb"]
    verdict = "met" if ratio <= GOAL else "MISSED"
    lines = [
        "# Long stacks: peak memory of the KDE CNN over a memory-mapped stack",
        "",
        f"{args.frames} frames of {args.size}x{args.size} uint16 ({size_mb:.0f} MB on disk, "
        f"read with the `{long['backend']}` backend), the shipped KDE CNN through "
        f"`pipeline.run_kde` (sum image only), batch {args.batch}, {args.threads} thread(s), "
        f"each run in a fresh process; peak RSS from `getrusage` ({platform.machine()}, "
        f"Python {platform.python_version()}).",
        "",
        "| frames | peak RSS (MB) | RSS after the run (MB) | time (s) | frames/s |",
        "|---|---|---|---|---|",
        *(f"| {r['frames']} | {r['peak_rss_mb']:.0f} | {r['end_rss_mb']:.0f} | "
          f"{r['seconds']:.1f} | {r['frames_per_s']:.0f} |" for r in (short, long)),
        "",
        f"Ratio long/short: **{ratio:.3f}** (goal <= {GOAL}: {verdict}).",
        "",
        "Command: `OMP_NUM_THREADS=1 python benchmarks/bench_long_stack.py "
        f"--frames {args.frames} --threads {args.threads}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
