"""Posterior on the CPU: share of time outside the networks, and time per frame against area.

Simulated sCMOS frames (density 1 per um^2, 100 nm pixels) of several sizes go through
:func:`posterior.iter_posterior` with the shipped networks and the default settings (8 samples,
10 DPM-Solver steps). The time spent inside the denoiser's and the KDE CNN's forward calls is
measured by wrapping them; everything else (noise, sampler arithmetic, moments and peaks on the
device, the host copy, peak tables, calibrated variance, localization with its uncertainty) is
"outside the networks". Localization (:func:`posterior.localize_posterior`) is also timed alone.
Goal: outside the networks <= 15 % at 64x64 and 256x256.

    nice -n 10 python benchmarks/bench_posterior_scaling.py --threads 2 [--sizes 64 128 256]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from napari_smlm_diffusion import posterior
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, iter_posterior
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack


class Timer:
    """Accumulated wall time of the calls of a wrapped function."""

    def __init__(self, function):
        self.function, self.seconds = function, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def measure(engine: PosteriorEngine, size: int, frames: int, settings: PosteriorSettings
            ) -> dict:
    """Time ``frames`` frames of ``size`` x ``size`` pixels (after one warm-up frame)."""
    stack = simulate_stack(frames + 1, SimulationConfig(size=(size, size), density=1.0),
                           seed=size).frames
    camera = preset("sCMOS")
    list(iter_posterior(stack, camera, engine, range(1), settings, block_frames=1))  # warm-up
    denoiser, kde = Timer(engine.denoiser.forward), Timer(engine.kde.model.forward)
    localize = Timer(posterior.localize_posterior)
    engine.denoiser.forward, engine.kde.model.forward = denoiser, kde
    posterior.localize_posterior = localize
    try:
        start = time.perf_counter()
        tables = [b.localizations for b in iter_posterior(stack, camera, engine,
                                                          range(1, frames + 1), settings)]
        total = time.perf_counter() - start
    finally:
        del engine.denoiser.forward, engine.kde.model.forward
        posterior.localize_posterior = localize.function
    outside = total - denoiser.seconds - kde.seconds
    return {"size": size, "frames": frames, "seconds_per_frame": total / frames,
            "seconds_per_megapixel": total / frames / (size * size / 1e6),
            "denoiser_share": denoiser.seconds / total, "kde_cnn_share": kde.seconds / total,
            "outside_networks_share": outside / total,
            "localization_share": localize.seconds / total,
            "molecules_per_frame": sum(len(t) for t in tables) / frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--pixels", type=int, default=64 * 64 * 8,
                        help="camera pixels to time per size (frames = max(1, pixels/area))")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = PosteriorEngine.load(device="cpu", notify=lambda message: None)
    settings = PosteriorSettings(samples=args.samples, steps=args.steps)
    rows = []
    for size in args.sizes:
        row = measure(engine, size, max(1, args.pixels // (size * size)), settings)
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in row.items()}), flush=True)
    print(json.dumps({"threads": args.threads, "samples": args.samples, "steps": args.steps,
                      "rows": rows}))


if __name__ == "__main__":
    main()
