"""Throughput of the KDE CNN and of localization on this machine (frames per second).

Runs the shipped KDE CNN on simulated 64x64 frames (1 emitter/um^2, sCMOS), timing the network
alone (KdeEngine.predict), the default localization (KDE peaks, photometry, precision) and the
localization with the joint position fit (``refine=True``), for two batch sizes and 1 or 2
threads, best of ``--repeats`` runs. ``--baseline`` also times ("before" columns), interleaved in
the same run, the trained network as it was run before (batch norms unfolded, fine-grid
refinement) with the localization serial after it (the current localization code), so that
speed-ups can be read on a busy machine.

    python benchmarks/bench_throughput.py [--frames 128] [--size 64] [--repeats 3] [--baseline]
        [--out benchmarks/results/throughput.md]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_smlm_diffusion.camera import Camera, preset
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.pretrained import load_kde_cnn
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


class SerialEngine(KdeEngine):
    """The engine as before: localization always after the network, never beside it."""

    def leaves_a_core_free(self) -> bool:
        return False


def baseline_engine() -> SerialEngine:
    """The trained network unchanged (channels_last on the CPU, as before), serial."""
    model, card = load_kde_cnn(device="cpu")
    return SerialEngine(model.to(memory_format=torch.channels_last), card, torch.device("cpu"))


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def best_fps(runs: dict[str, Callable[[], object]], n_frames: int, repeats: int
             ) -> dict[str, float]:
    """Frames per second of each run: one warm-up call, then the best of ``repeats`` calls,
    the runs interleaved so that they see the same machine load."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], _timed(run))
    return {name: n_frames / seconds for name, seconds in best.items()}


def runs_for(engine: KdeEngine, frames: np.ndarray, camera: Camera, batch: int, tag: str
             ) -> dict[str, Callable[[], object]]:
    """The three timed steps of one engine at one batch size."""
    return {
        f"cnn{tag}": lambda: [engine.predict(frames[i:i + batch], camera)
                              for i in range(0, len(frames), batch)],
        f"default{tag}": lambda: run_kde(frames, camera, engine, batch_size=batch),
        f"fit{tag}": lambda: run_kde(frames, camera, engine, batch_size=batch, refine=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", action="store_true",
                        help="also time the network and localization as run before")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.md"))
    args = parser.parse_args()
    camera = preset("sCMOS")
    config = SimulationConfig(size=(args.size, args.size), density=1.0, layout="filaments")
    frames = simulate_stack(args.frames, config, seed=600_000).frames
    engine = KdeEngine.load(device="cpu")
    baseline = baseline_engine() if args.baseline else None
    steps = ("cnn", "default", "fit")
    header = ["threads", "batch", "CNN only", "localize (default)", "localize --fit"]
    if baseline is not None:
        header[2:] = [f"{h}{s}" for h in header[2:] for s in ("", " before")]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (16, 64):
            runs = runs_for(engine, frames, camera, batch, "")
            if baseline is not None:
                runs |= runs_for(baseline, frames, camera, batch, " before")
            fps = best_fps(runs, len(frames), args.repeats)
            tags = ("", " before") if baseline is not None else ("",)
            cells = [f"{fps[step + tag]:.0f}" for step in steps for tag in tags]
            rows.append(f"| {threads} | {batch} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    text = (f"# Throughput, frames/s on {args.size}x{args.size} frames (CPU, fp32)\n\n"
            f"{args.frames} frames, 1 emitter/um^2 filaments, sCMOS, best of {args.repeats}.\n\n"
            + "\n".join(rows) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
