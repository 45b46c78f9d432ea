"""Throughput of the KDE CNN and of localization on this machine (frames per second).

Runs the shipped KDE CNN on simulated 64x64 frames (1 emitter/um^2, sCMOS), timing the network
alone (KdeEngine.predict), the default localization (KDE peaks, photometry, precision) and the
localization with the joint position fit (``refine=True``), for two batch sizes and 1 or 2
threads.

    python benchmarks/bench_throughput.py [--frames 128] [--size 64] [--out results/throughput.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


def frames_per_second(run, n_frames: int, repeats: int = 1) -> float:
    """Best of ``repeats`` timed calls after one warm-up call (frames per second)."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return n_frames / best


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.md"))
    args = parser.parse_args()
    camera = preset("sCMOS")
    config = SimulationConfig(size=(args.size, args.size), density=1.0, layout="filaments")
    frames = simulate_stack(args.frames, config, seed=600_000).frames
    engine = KdeEngine.load(device="cpu")
    rows = ["| threads | batch | CNN only | localize (default) | localize --fit |",
            "|---|---|---|---|---|"]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (16, 64):
            cnn = frames_per_second(lambda b=batch: [engine.predict(frames[i:i + b], camera)
                                                     for i in range(0, len(frames), b)],
                                    len(frames))
            default = frames_per_second(lambda b=batch: run_kde(frames, camera, engine,
                                                                batch_size=b), len(frames))
            fit = frames_per_second(lambda b=batch: run_kde(frames, camera, engine,
                                                            batch_size=b, refine=True),
                                    len(frames))
            rows.append(f"| {threads} | {batch} | {cnn:.0f} | {default:.0f} | {fit:.0f} |")
            print(rows[-1], flush=True)
    text = (f"# Throughput, frames/s on {args.size}x{args.size} frames (CPU, fp32)\n\n"
            f"{args.frames} frames, 1 emitter/um^2 filaments, sCMOS.\n\n" + "\n".join(rows) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
