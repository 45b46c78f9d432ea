"""Shipped weights: locate, verify by hash, load; model cards.

Weights are stored only as safetensors (never pickled), each next to a JSON model card with the same
stem that records the architecture, the training command and configuration, the quality measured on
held-out simulated data, and the SHA-256 of the weights file. Loading refuses a file whose hash does
not match its card, and any file that is not in the safetensors format (a pickled PyTorch checkpoint
renamed ``.safetensors`` is recognised by its first bytes and refused; nothing is ever unpickled).
Weights are named either by a shipped model name or by the path of a ``.safetensors`` file; no other
path (``.pt``, ``.pth``, ``.ckpt``, a name with ``..``) is resolved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save_file

from .io import atomic_write
from .model_cards import (
    DenoiserCard,
    KdeCnnCard,
    WeightsError,
    parse_denoiser_card,
    parse_kde_cnn_card,
)
from .models.denoiser import ConditionalDenoiser
from .models.kde_cnn import KdeCnn
from .weights import DENOISER_NAME, KDE_CNN_NAME

WEIGHTS_PACKAGE = "napari_smlm_diffusion.weights"


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


def shipped_names() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(p.stem for p in weights_dir().glob("*.safetensors"))


def resolve_weights(name_or_path: str | Path) -> tuple[Path, Path]:
    """Return (weights path, model card path) for a shipped name or a user's .safetensors file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".safetensors":
        weights = candidate
    elif str(name_or_path) in shipped_names():
        weights = weights_dir() / f"{name_or_path}.safetensors"
    else:
        raise WeightsError(
            f"weights {str(name_or_path)!r}: expected a shipped model name "
            f"({', '.join(shipped_names())}) or a .safetensors file with its .json model card "
            "next to it (pickled .pt/.pth/.ckpt files are never loaded)"
        )
    card = weights.with_suffix(".json")
    if not weights.is_file():
        raise WeightsError(
            f"weights file {weights} not found; reinstall napari-smlm-diffusion or pass the path "
            "of a .safetensors file that has its .json model card next to it"
        )
    if not card.is_file():
        raise WeightsError(f"model card {card} not found next to the weights file {weights}")
    return weights, card


def model_folder_weights(folder: str | Path) -> tuple[Path, Path]:
    """(KDE CNN, denoiser) weights of a model folder written by ``smlm-diffusion adapt``."""
    folder = Path(folder)
    paths = (folder / f"{KDE_CNN_NAME}.safetensors", folder / f"{DENOISER_NAME}.safetensors")
    if not folder.is_dir():
        raise WeightsError(f"model folder {folder} not found (expected a folder written by "
                           "smlm-diffusion adapt)")
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise WeightsError(f"model folder {folder} lacks {', '.join(missing)}: finish it with "
                           f"smlm-diffusion adapt ... -o {folder} (it resumes)")
    return paths


def paired_kde_cnn(denoiser: str | Path = DENOISER_NAME) -> str:
    """The shipped KDE CNN that ``denoiser`` was trained with (found by its hash).

    A new KDE CNN can ship before the denoiser is retrained on its outputs; the posterior then
    keeps the CNN its denoiser knows."""
    card = read_model_card(resolve_weights(denoiser)[1])
    wanted = card.get("kde_cnn_sha256")
    for name in shipped_names():
        candidate = read_model_card(resolve_weights(name)[1])
        if name.startswith(KDE_CNN_NAME) and candidate.get("sha256") == wanted:
            return name
    raise WeightsError(f"no shipped KDE CNN matches the denoiser {denoiser} (it was trained with "
                       f"sha256 {str(wanted)[:12]}...): pass the CNN it was trained with "
                       "(--weights)")


def read_model_card(card_path: str | Path) -> dict[str, Any]:
    """Read a JSON model card."""
    try:
        card = json.loads(Path(card_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"model card {card_path} is unreadable: {error}") from error
    if not isinstance(card, dict):
        raise WeightsError(f"model card {card_path} is not a JSON object")
    return card


def check_safetensors_format(path: str | Path) -> None:
    """Raise :class:`WeightsError` unless ``path`` starts like a safetensors file.

    A safetensors file starts with the length of its JSON header (8 bytes, little endian) and
    the header itself (``{``). A pickled PyTorch checkpoint (a zip archive or a raw pickle) is
    recognised here, before any loader sees it, and refused.
    """
    with open(path, "rb") as handle:
        head = handle.read(9)
        size = Path(path).stat().st_size
    length = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if 0 < length <= size - 8 and head[8:9] == b"{":
        return
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        kind = "a zip archive (torch.save)" if head[:2] == b"PK" else "a Python pickle"
        raise WeightsError(
            f"weights file {path} is {kind}, not safetensors: pickled weights are never loaded "
            "(convert them with safetensors.torch.save_file)"
        )
    raise WeightsError(f"weights file {path} is not a safetensors file (bad header)")


def load_verified_state(name_or_path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a state dict after checking the file's SHA-256 against its model card.

    The file is read once: the bytes that were hashed are the bytes that are loaded."""
    weights, card_path = resolve_weights(name_or_path)
    check_safetensors_format(weights)
    card = read_model_card(card_path)
    expected = card.get("sha256")
    data = weights.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected != actual:
        raise WeightsError(
            f"weights file {weights} does not match its model card (sha256 {actual[:12]}..., "
            f"expected {str(expected)[:12]}...): the file is altered or corrupt"
        )
    try:
        return load(data), card
    except Exception as error:  # safetensors raises its own SafetensorError
        raise WeightsError(f"weights file {weights} is not a readable safetensors file: "
                           f"{' '.join(str(error).split())}") from error


def load_model(
    name_or_path: str | Path, builder: Callable[..., torch.nn.Module],
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """Build a network with ``builder(**card["architecture"])`` from verified weights, in eval
    mode on ``device``. Returns (model, model card)."""
    state, card = load_verified_state(name_or_path)
    architecture = card.get("architecture")
    if not isinstance(architecture, dict):
        raise WeightsError(f"the model card of {name_or_path} has no 'architecture' object")
    try:
        model = builder(**architecture)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"the model card of {name_or_path} does not describe a "
                           f"{builder.__name__}: {error}") from error
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsError(f"weights do not fit the {builder.__name__} architecture: "
                           f"{error}") from error
    return model.eval().to(device), card


def load_kde_cnn(
    name_or_path: str | Path = KDE_CNN_NAME, device: str | torch.device = "cpu"
) -> tuple[KdeCnn, KdeCnnCard]:
    """The KDE CNN from verified weights (see :func:`load_model`) with its validated card."""
    model, card = load_model(name_or_path, KdeCnn, device)
    return model, parse_kde_cnn_card(card, resolve_weights(name_or_path)[1])


def load_denoiser(
    name_or_path: str | Path = DENOISER_NAME, device: str | torch.device = "cpu"
) -> tuple[ConditionalDenoiser, DenoiserCard]:
    """The conditional diffusion denoiser from verified weights (see :func:`load_model`) with
    its validated card."""
    model, card = load_model(name_or_path, ConditionalDenoiser, device)
    return model, parse_denoiser_card(card, resolve_weights(name_or_path)[1])


def save_weights(model: torch.nn.Module, path: str | Path, card: dict[str, Any]) -> dict:
    """Save a model's weights (safetensors) and its model card with the file hash, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as temporary:
        save_file(state, str(temporary))
    return write_model_card(path, card)


def write_model_card(weights: str | Path, card: dict[str, Any]) -> dict:
    """Write ``card`` with the SHA-256 of ``weights`` next to it (``.json``), atomically."""
    weights = Path(weights)
    card = dict(card, sha256=sha256_file(weights), file=weights.name)
    text = json.dumps(card, indent=2, sort_keys=False) + "\n"
    with atomic_write(weights.with_suffix(".json")) as temporary:
        temporary.write_text(text)
    return card


CALIBRATION_KEYS = ("posterior_mean_threshold", "uncertainty_model", "pixel_variance_calibration")


def update_card(card: dict[str, Any], calibration: dict | None = None,
                benchmark: dict | None = None) -> dict[str, Any]:
    """``card`` with a calibration record (its applied values copied to the top level, replacing
    those of an earlier calibration) and/or benchmark results."""
    card = dict(card)
    if calibration is not None:
        card["calibration"] = calibration
        card.update({key: calibration[key] for key in CALIBRATION_KEYS})
    if benchmark is not None:
        card["benchmark"] = benchmark
    return card
