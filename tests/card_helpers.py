"""Model cards for tests with stand-in networks."""

import json
from dataclasses import replace

from napari_smlm_diffusion.model_cards import DenoiserCard, parse_denoiser_card
from napari_smlm_diffusion.pretrained import weights_dir


def uncalibrated_eps_card(detection_threshold: float = 0.3) -> DenoiserCard:
    """The shipped denoiser's card as a noise-predicting (eps) model without calibration, for
    stand-in denoisers (the exact Gaussian posterior, counters, zeros)."""
    shipped = json.loads((weights_dir() / "denoiser.json").read_text())
    return replace(parse_denoiser_card(shipped, "denoiser.json"), prediction="eps",
                   residual_scale=2.0, uncertainty_model=None, pixel_variance_calibration=None,
                   detection_threshold=detection_threshold,
                   posterior_mean_threshold=detection_threshold)


def kde_card(architecture: dict, detection_threshold: float = 0.3) -> dict:
    """A complete KDE CNN model card for test weights (training ranges of the default run)."""
    from dataclasses import asdict

    from napari_smlm_diffusion.training_data import KdeTrainingConfig

    return {"architecture": architecture, "detection_threshold": detection_threshold,
            "upsampling": 4, "kde_sigma_fine_px": 1.0,
            "training": asdict(KdeTrainingConfig(architecture=architecture))}


def denoiser_card(architecture: dict, kde_weights, detection_threshold: float = 0.3,
                  **extra) -> dict:
    """A complete denoiser model card for test weights, paired with ``kde_weights``."""
    from dataclasses import asdict

    from napari_smlm_diffusion.pretrained import sha256_file
    from napari_smlm_diffusion.training_data import KdeTrainingConfig

    return {"architecture": architecture, "detection_threshold": detection_threshold,
            "prediction": "v", "residual_scale": 2.0,
            "schedule": {"type": "cosine", "T": 100, "offset": 0.008},
            "kde_cnn_sha256": sha256_file(kde_weights),
            "training": {"kde": asdict(KdeTrainingConfig())}, **extra}
