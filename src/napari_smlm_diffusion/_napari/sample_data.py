"""Sample data: a simulated SMLM stack with its ground truth, generated on the fly."""

from __future__ import annotations

from ..camera import preset
from ..simulate import SimulationConfig, simulate_stack
from ..training_data import REALISTIC_BLINKING
from .layers import image_contrast, points_from_table

SAMPLE_FRAMES = 100
SAMPLE_SEED = 2024
SAMPLE_PSF_SIGMA_NM = 120.0


def sample_config() -> SimulationConfig:
    """Conditions of the sample stack: sCMOS, 64x64 px of 100 nm, filaments, 1 emitter/um^2 of
    blinking fluorophores (on 3 frames, off 100), so molecules reappear in consecutive frames as
    on a real movie."""
    camera = preset("sCMOS")
    return SimulationConfig(
        size=(64, 64), density=1.0, photons=(1000.0, 5000.0), background=50.0,
        psf_sigma_px=SAMPLE_PSF_SIGMA_NM / camera.pixel_size, camera=camera, layout="filaments",
        blinking=REALISTIC_BLINKING,
    )


def make_sample_data() -> list[tuple]:
    """The simulated stack (image layer, scale in nm) and its true positions (Points layer)."""
    config = sample_config()
    stack = simulate_stack(SAMPLE_FRAMES, config, seed=SAMPLE_SEED)
    pixel = config.camera.pixel_size
    scale, translate = (1.0, pixel, pixel), (0.0, 0.0, 0.0)
    metadata = {"camera": config.camera.to_dict(), "psf_sigma_nm": SAMPLE_PSF_SIGMA_NM,
                "pixel_size_nm": pixel, "simulated": True, "seed": SAMPLE_SEED}
    coords, features = points_from_table(stack.truth, scale, translate)
    image = (stack.frames, {"name": "Simulated SMLM stack", "scale": scale,
                            "translate": translate, "metadata": metadata,
                            "contrast_limits": image_contrast(stack.frames[0]),
                            "units": ("pixel", "nm", "nm"),
                            "axis_labels": ("frame", "y", "x")}, "image")
    points = (coords, {"name": "Ground truth", "features": features, "size": 0.8 * pixel,
                       "face_color": "transparent", "border_color": "yellow",
                       "border_width": 0.1, "out_of_slice_display": False,
                       "units": ("pixel", "nm", "nm"), "axis_labels": ("frame", "y", "x"),
                       "metadata": {"raw_scale": scale, "raw_translate": translate,
                                    "pixel_size_nm": pixel}}, "points")
    return [image, points]
