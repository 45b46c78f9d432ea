"""Shared fixtures."""

import pytest
import torch

from card_helpers import kde_card
from napari_smlm_diffusion.models.kde_cnn import KdeCnn
from napari_smlm_diffusion.pretrained import save_weights


@pytest.fixture
def untrained_weights(tmp_path):
    """A small, untrained KDE CNN saved with a model card (to test the machinery, not quality)."""
    torch.manual_seed(0)
    model = KdeCnn(width=8, dilations=(1, 2), up_channels=(4, 2))
    path = tmp_path / "tiny.safetensors"
    save_weights(model, path, kde_card(model.config))
    return path


@pytest.fixture
def isolated_settings(tmp_path, monkeypatch):
    """Camera settings of the widgets in a temporary config dir, fresh for every test."""
    from napari_smlm_diffusion._napari.widgets import settings

    monkeypatch.setenv(settings.CONFIG_ENV, str(tmp_path / "config"))
    settings.reset_settings()
    yield
    settings.reset_settings()


@pytest.fixture
def viewer(make_napari_viewer, isolated_settings):
    """A napari viewer showing the plugin's sample data (raw stack + ground truth)."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-smlm-diffusion", "simulated_stack")
    return viewer
