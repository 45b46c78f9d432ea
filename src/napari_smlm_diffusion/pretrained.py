"""Shipped weights: locate, verify by hash, load; model cards.

Weights are stored only as safetensors (never pickled), each next to a JSON model card with the same
stem that records the architecture, the training command and configuration, the quality measured on
held-out simulated data, and the SHA-256 of the weights file. Loading refuses a file whose hash does
not match its card.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .io import atomic_write
from .models.denoiser import ConditionalDenoiser
from .models.kde_cnn import KdeCnn
from .weights import DENOISER_NAME, KDE_CNN_NAME

WEIGHTS_PACKAGE = "napari_smlm_diffusion.weights"


class WeightsError(RuntimeError):
    """A weights file or its model card is missing, altered or unusable."""


def weights_dir() -> Path:
    """Folder of the shipped weights inside the installed package."""
    return Path(str(resources.files(WEIGHTS_PACKAGE)))


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(name_or_path: str | Path) -> tuple[Path, Path]:
    """Return (weights path, model card path) for a shipped name or a user's .safetensors file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".safetensors":
        weights = candidate
    else:
        weights = weights_dir() / f"{name_or_path}.safetensors"
    card = weights.with_suffix(".json")
    if not weights.is_file():
        raise WeightsError(
            f"weights file {weights} not found; reinstall napari-smlm-diffusion or pass the path "
            "of a .safetensors file that has its .json model card next to it"
        )
    if not card.is_file():
        raise WeightsError(f"model card {card} not found next to the weights file {weights}")
    return weights, card


def read_model_card(card_path: str | Path) -> dict[str, Any]:
    """Read a JSON model card."""
    try:
        return json.loads(Path(card_path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"model card {card_path} is unreadable: {error}") from error


def load_verified_state(name_or_path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a state dict after checking the file's SHA-256 against its model card."""
    weights, card_path = resolve_weights(name_or_path)
    card = read_model_card(card_path)
    expected = card.get("sha256")
    actual = sha256_file(weights)
    if expected != actual:
        raise WeightsError(
            f"weights file {weights} does not match its model card (sha256 {actual[:12]}..., "
            f"expected {str(expected)[:12]}...): the file is altered or corrupt"
        )
    return load_file(str(weights)), card


def load_model(
    name_or_path: str | Path, builder: Callable[..., torch.nn.Module],
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """Build a network with ``builder(**card["architecture"])`` from verified weights, in eval
    mode on ``device``. Returns (model, model card)."""
    state, card = load_verified_state(name_or_path)
    model = builder(**card["architecture"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsError(f"weights do not fit the {builder.__name__} architecture: "
                           f"{error}") from error
    return model.eval().to(device), card


def load_kde_cnn(
    name_or_path: str | Path = KDE_CNN_NAME, device: str | torch.device = "cpu"
) -> tuple[KdeCnn, dict]:
    """The KDE CNN from verified weights (see :func:`load_model`)."""
    return load_model(name_or_path, KdeCnn, device)


def load_denoiser(
    name_or_path: str | Path = DENOISER_NAME, device: str | torch.device = "cpu"
) -> tuple[ConditionalDenoiser, dict]:
    """The conditional diffusion denoiser from verified weights (see :func:`load_model`)."""
    return load_model(name_or_path, ConditionalDenoiser, device)


def save_weights(model: torch.nn.Module, path: str | Path, card: dict[str, Any]) -> dict:
    """Save a model's weights (safetensors) and its model card with the file hash, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as temporary:
        save_file(state, str(temporary))
    card = dict(card, sha256=sha256_file(path), file=path.name)
    text = json.dumps(card, indent=2, sort_keys=False) + "\n"
    with atomic_write(path.with_suffix(".json")) as temporary:
        temporary.write_text(text)
    return card
