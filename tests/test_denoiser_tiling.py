"""The denoiser tiled with margins equals the denoiser on the whole frame."""

import pytest
import torch

from napari_smlm_diffusion.denoiser_tiling import (
    MARGIN_PX,
    POOLING_GRID_PX,
    RECEPTIVE_RADIUS_PX,
    denoise_tiled,
)
from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser


@pytest.fixture(scope="module")
def network():
    """A small denoiser (the receptive field depends on the depth, not the width) with
    non-zero weights everywhere (the trained head is not zero)."""
    torch.manual_seed(0)
    model = ConditionalDenoiser((8, 8, 12), 16).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.3)

    def run(y_t, cond, frame, log_snr):
        with torch.inference_mode():
            return model(y_t, cond, frame, log_snr)

    return run


def _inputs(rows, cols, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 4 * rows, 4 * cols, generator=g),
            torch.rand(n, 1, 4 * rows, 4 * cols, generator=g),
            torch.randn(n, 1, rows, cols, generator=g), torch.tensor([-2.0, 3.0][:n]))


def test_receptive_field_is_inside_the_margin(network):
    """Perturb one camera pixel of the frame at every position of the pooling grid: outputs
    change at most RECEPTIVE_RADIUS_PX camera pixels away, and that radius is reached."""
    y_t, cond, frame, log_snr = _inputs(80, 80, n=1)
    base = network(y_t, cond, frame, log_snr)[0, 0]
    radii = []
    for offset in range(POOLING_GRID_PX):
        moved = frame.clone()
        moved[..., 40 + offset, 40 + offset] += 10.0
        changed = (network(y_t, cond, moved, log_snr)[0, 0] - base).abs() > 0
        rows = torch.nonzero(changed.any(dim=1))[:, 0]
        centre = 4 * (40 + offset)
        radii.append(max(centre - int(rows.min()), int(rows.max()) - centre - 3) / 4)
    assert max(radii) <= RECEPTIVE_RADIUS_PX < MARGIN_PX
    assert max(radii) > RECEPTIVE_RADIUS_PX - 1


def test_tiled_equals_whole_frame(network):
    """A 150 x 118 frame (not a multiple of the pooling grid) in 64-pixel tiles."""
    inputs = _inputs(150, 118)
    whole = network(*inputs)
    tiled = denoise_tiled(network, *inputs, tile=64, margin=MARGIN_PX)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=2e-5 * whole.abs().max().item(), rtol=0)
    short = denoise_tiled(network, *inputs, tile=64, margin=MARGIN_PX - 8)  # margin too small
    assert not torch.allclose(short, whole, atol=1e-3 * whole.abs().max().item(), rtol=0)


def test_small_frames_are_not_tiled_and_bad_tiles_are_refused(network):
    inputs = _inputs(40, 36)
    assert torch.equal(denoise_tiled(network, *inputs, tile=64), network(*inputs))
    with pytest.raises(ValueError, match="multiples of 4 with tile > 2 \\* margin"):
        denoise_tiled(network, *inputs, tile=66)
