"""Benchmark the post-processing steps on 1 million simulated localizations (one thread).

Drift: a "mixed" structure (filaments, clusters, rings) in a 20 um field, 50 localizations per
frame over 20,000 frames (about 1 million), localization noise 10-20 nm, a smooth drift of
300 nm per axis; the residual drift RMS (2D, constant offset removed) is measured with and
without refinement. Merge: 250,000 molecules blinking for 4 frames on average (about 1 million
detections) in 20,000 frames. Render, FRC and Picasso HDF5 use the drifting table. Goal: each
step <= 10 s on the 2-core development machine.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_postprocess.py
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from napari_smlm_diffusion.io import read_localizations, write_localizations
from napari_smlm_diffusion.postprocess import synthetic
from napari_smlm_diffusion.postprocess.drift import apply_drift, estimate_drift
from napari_smlm_diffusion.postprocess.frc import frc_localizations
from napari_smlm_diffusion.postprocess.merge import merge_blinks
from napari_smlm_diffusion.postprocess.picasso_format import read_picasso, write_picasso
from napari_smlm_diffusion.postprocess.render import render


def timed(rows: list, name: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    rows.append((name, seconds))
    print(f"{name}: {seconds:.2f} s", flush=True)
    return result


def residual_rms(estimated: np.ndarray, true: np.ndarray) -> float:
    error = estimated - true
    error -= error.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(error**2, axis=1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--per-frame", type=float, default=50.0)
    parser.add_argument("--fov", type=float, default=20_000.0, help="field side, nm")
    parser.add_argument("--drift", type=float, default=300.0, help="drift range per axis, nm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sites = synthetic.structure_sites(args.fov, rng, "mixed")
    true = synthetic.smooth_drift(args.frames, args.drift, rng)
    table = synthetic.sample_sites(sites, args.frames, args.per_frame, (10.0, 20.0), rng,
                                   true + 1000.0)
    blinks = synthetic.simulate_blinks(250_000, args.frames, args.fov, 4.0, (8.0, 20.0), rng)
    print(f"{len(table)} drifting localizations ({len(sites)} sites), {len(blinks)} blink "
          f"detections of 250000 molecules; {platform.processor() or platform.machine()}")
    rows: list = []
    notes = []
    with threadpool_limits(1):
        plain = timed(rows, "drift: RCC, no refinement", estimate_drift, table, refine=False)
        result = timed(rows, "drift: RCC + refinement", estimate_drift, table)
        timed(rows, "drift: apply to the table", apply_drift, table, result.drift_nm)
        notes.append(f"drift windows: {len(result.window_frames)} of "
                     f"{result.window_frames[1] - result.window_frames[0]:.0f} frames, bin "
                     f"{result.bin_nm:g} nm, {result.pairs_rejected} pairs rejected")
        notes.append(f"true drift range x/y: {np.ptp(true[:, 0]):.0f} / {np.ptp(true[:, 1]):.0f} "
                     "nm")
        notes.append("residual drift RMS (2D, offset removed): RCC "
                     f"{residual_rms(plain.drift_nm, true):.2f} nm, "
                     f"RCC + refinement {residual_rms(result.drift_nm, true):.2f} nm")
        merged = timed(rows, "merge (radius 100 nm, gap 1)", merge_blinks,
                       blinks.drop(columns=["molecule", "true_x_nm", "true_y_nm"]), 100.0, 1)
        notes.append(f"merge: {len(merged)} molecules found of 250000 true")
        timed(rows, "render: histogram, 10 nm pixels", render, table, 10.0)
        timed(rows, "render: uncertainty Gaussians, 10 nm pixels", render, table, 10.0,
              "uncertainty")
        timed(rows, "render: fixed 20 nm Gaussians, 5 nm pixels", render, table, 5.0, 20.0)
        corrected = apply_drift(table, result.drift_nm)
        frc = timed(rows, "FRC (5 nm pixels, blocks of 50 frames)", frc_localizations, corrected)
        notes.append(f"FRC resolution after drift correction: {frc.resolution_nm:.1f} nm "
                     f"(pixel {frc.pixel_size_nm:.2f} nm)")
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            timed(rows, "write ThunderSTORM CSV", write_localizations, folder / "a.csv", table)
            timed(rows, "read ThunderSTORM CSV", read_localizations, folder / "a.csv")
            timed(rows, "write Picasso HDF5", write_picasso, folder / "a.hdf5", table, 100.0)
            timed(rows, "read Picasso HDF5", read_picasso, folder / "a.hdf5")
    print("\n| step | seconds |\n| --- | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
