"""Denoiser data error per noise level, next to the no-correction baseline.

For validation batches (training seeds never used), the true residual r between the KDE and the
CNN's estimate is noised to each gamma; the denoiser's estimate of r is compared with r (mean
squared error) and with predicting no correction at all (r = 0, i.e. the CNN's KDE). A denoiser
whose error is above the baseline at some level makes samples worse than the CNN there.

    python benchmarks/bench_denoiser_levels.py [--weights denoiser] [--batches 4]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from napari_smlm_diffusion.diffusion import predict
from napari_smlm_diffusion.pretrained import load_denoiser, load_kde_cnn
from napari_smlm_diffusion.train import VALIDATION_SEED, DiffusionTrainingConfig, diffusion_batch
from napari_smlm_diffusion.weights import DENOISER_NAME, KDE_CNN_NAME

GAMMAS = (0.999, 0.99, 0.9, 0.7, 0.5, 0.3, 0.1, 0.01, 0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DENOISER_NAME)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    cnn, _ = load_kde_cnn(KDE_CNN_NAME)
    denoiser, card = load_denoiser(args.weights)
    prediction = card.prediction
    batches = [diffusion_batch(DiffusionTrainingConfig(), cnn, VALIDATION_SEED + k)
               for k in range(args.batches)]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for gamma in GAMMAS:
        errors, baseline = [], []
        for residual, y_hat, frames in batches:
            noise = torch.randn(residual.shape, generator=generator)
            y_t = gamma**0.5 * residual + (1 - gamma) ** 0.5 * noise
            with torch.inference_mode():
                x0, _ = predict(lambda y, snr, y_hat=y_hat, frames=frames: denoiser(
                    y, y_hat, frames, snr), y_t, gamma, prediction)
            errors.append(float(((x0 - residual) ** 2).mean()))
            baseline.append(float((residual**2).mean()))
        rows.append({"gamma": gamma, "mse": float(np.mean(errors)),
                     "mse_no_correction": float(np.mean(baseline))})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
