"""Does adapt's label-free check on the user's stack agree with the ground truth?

For an adapt folder made by ``bench_adapt.py`` (its ``stack.tif`` holds the simulation seed in
its metadata, so the truth is simulated again), runs the posterior of the generic pair and of
the adapted pair on ``--frames`` consecutive frames from ``--start`` and prints, for the generic
pair and for the adapted pair under each candidate uncertainty model (the card's refitted one
and the generic one), the truth's RMS of error / sigma per axis and robust spread next to the
label-free check's RMS and spread (what adapt's last stage sees and chooses by).

    OMP_NUM_THREADS=1 python benchmarks/bench_adapt_stack_check.py CASE ADAPT_DIR \
        [--frames 32] [--start 84]

with CASE a key of ``training_data.MICROSCOPE_CORNERS`` and ADAPT_DIR the case's folder
(``runs/bench-adapt-v8/dim_65nm_psf1.9``: ``stack.tif`` and ``models/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch

from napari_smlm_diffusion.adapt_stack_check import checked
from napari_smlm_diffusion.camera import Camera
from napari_smlm_diffusion.io import open_stack
from napari_smlm_diffusion.posterior import PosteriorEngine, iter_posterior, with_uncertainty_model
from napari_smlm_diffusion.posterior_settings import DEFAULT_POSTERIOR
from napari_smlm_diffusion.pretrained import load_verified_state, model_folder_weights
from napari_smlm_diffusion.simulate import simulate_stack
from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS
from napari_smlm_diffusion.weights import DENOISER_NAME

sys.path.insert(0, str(Path(__file__).parent))
from bench_uncertainty_check import ground_truth_calibration  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=list(MICROSCOPE_CORNERS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--start", type=int, default=84, help="first frame, 0-based")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open_stack(args.folder / "stack.tif") as stack:
        metadata, total = stack.metadata, len(stack.data)
    camera = Camera(**metadata["camera"])
    end = args.start + args.frames
    truth = simulate_stack(total, MICROSCOPE_CORNERS[args.case].config(64, 1.0),
                           seed=metadata["seed"], with_kde=False).truth
    truth = truth[(truth.frame >= args.start) & (truth.frame < end)]
    truth = truth.assign(frame=truth.frame - args.start)
    frames = tifffile.imread(args.folder / "stack.tif")[args.start:end].astype(np.float32)
    kde, denoiser = model_folder_weights(args.folder / "models")
    card = load_verified_state(denoiser)[1]
    models = {"refitted": card["calibration"]["uncertainty_model_choice"].get(
        "refitted_model", card["uncertainty_model"]),
        "generic": load_verified_state(DENOISER_NAME)[1]["uncertainty_model"]}
    engines = {"generic pair": PosteriorEngine.load(device="cpu"),
               "adapted pair": PosteriorEngine.load(str(kde), str(denoiser), device="cpu")}
    print(f"{args.case}, frames {args.start + 1}-{end}")
    print("| pair | uncertainty model | RMS z x, y (truth) | robust z (truth) | RMS (label-free) "
          "| spread (label-free) | pairs |\n|---|---|---|---|---|---|---|")
    for name, engine in engines.items():
        table = pd.concat([b.localizations for b in iter_posterior(
            frames, camera, engine, range(args.frames), DEFAULT_POSTERIOR,
            metadata["psf_sigma_nm"])], ignore_index=True)
        variants = ({"card": table} if name == "generic pair" else
                    {m: with_uncertainty_model(table, models[m]) for m in models})
        for model, rows in variants.items():
            gt, check = ground_truth_calibration(truth, rows), checked(rows)
            print(f"| {name} | {model} | {gt['rms_z_x']:.2f}, {gt['rms_z_y']:.2f} | "
                  f"{gt['robust_z']:.2f} | {check.get('rms_spread', float('nan')):.2f} | "
                  f"{check.get('spread', float('nan')):.2f} | {check.get('pairs', 0)} |",
                  flush=True)


if __name__ == "__main__":
    main()
