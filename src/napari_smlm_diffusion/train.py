"""Training loops, resumable across sessions, logged as JSON lines.

A run lives in one folder: ``checkpoint.safetensors`` (model and optimiser tensors) with
``checkpoint.json`` (step and configuration), ``best.safetensors`` + ``best.json`` (the weights with
the best validation score so far, as a model card), and ``log.jsonl``. Training data are simulated
afresh for every step from ``(seed, step)``, so a resumed run sees exactly the data it would have
seen without the interruption. When the checkpoint is gone, ``--resume`` starts from the shipped
weights (fine-tuning) with a fresh optimiser.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .calibration.detection_thresholds import CANDIDATES
from .diffusion import COSINE_OFFSET, RESIDUAL_SCALE, T_STEPS, cosine_gammas, diffusion_loss
from .io import atomic_write
from .kde import find_peaks_in_frames
from .metrics import evaluate
from .models.denoiser import ConditionalDenoiser
from .models.kde_cnn import KdeCnn
from .preprocess import normalize_frames
from .pretrained import load_denoiser, load_kde_cnn, save_weights
from .simulate import SimulationConfig
from .training_data import (
    VALIDATION_SEED,
    KdeTrainingConfig,
    ValidationSet,
    training_batch,
    validation_set,
)
from .training_log import LOG_NAME
from .weights import DENOISER_NAME, KDE_CNN_NAME

SEED_SEMANTICS = ("sample k of frame f (0-based) draws its noise from a CPU torch.Generator seeded "
                  "from numpy's SeedSequence([seed, f, k]), so a frame's samples do not depend on "
                  "the frame range, on how samples are batched or on the device's random number "
                  "generator; on the CPU a seeded run repeats bit for bit")


#: What picks a KDE CNN's best weights and validation threshold: the mean efficiency at 250 nm
#: (the SMLM challenge's score, which weighs the RMSE of every match: well-placed molecules) or
#: the mean Jaccard index at 100 nm (the detection thresholds' criterion: molecules found).
SELECTION_TOLERANCE_NM = {"efficiency": 250.0, "jaccard": 100.0}


def validate_kde_cnn(model: KdeCnn, data: ValidationSet, selection: str = "efficiency") -> dict:
    """Loss-free validation: the threshold (of the detection thresholds' candidates) with the
    best mean ``selection`` score (a key of ``SELECTION_TOLERANCE_NM``, at its tolerance) over all
    validation conditions (``score``), with the mean efficiency at 250 nm and Jaccard index at
    100 nm at that threshold and the scores per condition. ``model`` must be in eval mode."""
    if selection not in SELECTION_TOLERANCE_NM:
        raise ValueError(f"selection must be one of {sorted(SELECTION_TOLERANCE_NM)}, got "
                         f"{selection!r}")
    per_threshold: dict[float, list[dict]] = {t: [] for t in CANDIDATES}
    with torch.inference_mode():
        for frames, truth, sim in zip(data.frames, data.truths, data.configs, strict=True):
            kdes = model(normalize_frames(frames, sim.camera))[:, 0].numpy()
            for threshold in CANDIDATES:
                locs = find_peaks_in_frames(kdes, sim.fine_pixel_nm, threshold)
                wide, narrow = (evaluate(truth, locs, SELECTION_TOLERANCE_NM[score])
                                for score in ("efficiency", "jaccard"))
                per_threshold[threshold].append({**wide, "jaccard_100nm": narrow["jaccard"]})
    key = "efficiency" if selection == "efficiency" else "jaccard_100nm"

    def mean(metric: str, threshold: float) -> float:
        return float(np.mean(np.nan_to_num([m[metric] for m in per_threshold[threshold]],
                                           nan=-100.0)))

    best = max(CANDIDATES, key=lambda t: mean(key, t))
    return {
        "score": mean(key, best),
        "threshold": float(best),
        "selection": selection,
        "mean_efficiency": mean("efficiency", best),
        "mean_jaccard_100nm": mean("jaccard_100nm", best),
        "per_condition": {
            name: {k: round(float(m[k]), 3)
                   for k in ("jaccard", "jaccard_100nm", "rmse_lateral_nm", "efficiency")}
            for name, m in zip(data.names, per_threshold[best], strict=True)
        },
    }


def _save_checkpoint(out: Path, model, optimizer, step: int, config, best: float) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().contiguous()
    with atomic_write(out / "checkpoint.safetensors") as temporary:
        save_file(tensors, str(temporary))
    meta = {"step": step, "best_score": best, "config": asdict(config)}
    text = json.dumps(meta, indent=2)
    with atomic_write(out / "checkpoint.json") as temporary:
        temporary.write_text(text)


def _load_checkpoint(out: Path, model, optimizer) -> tuple[int, float]:
    tensors = load_file(str(out / "checkpoint.safetensors"))
    meta = json.loads((out / "checkpoint.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = optimizer.state_dict()
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state["state"].setdefault(int(index), {})[key] = value
    optimizer.load_state_dict(state)
    return int(meta["step"]), float(meta["best_score"])


def learning_rate(config, step: int) -> float:
    """Linear warm-up then cosine decay to 2 % of the peak rate (``config`` has learning_rate,
    warmup_steps and steps)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.learning_rate * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainingTask:
    """What differs between the two trainings; :func:`run_training` does the rest."""

    name: str
    model: torch.nn.Module
    config: object
    batch: Callable[[int], tuple]
    loss: Callable[[torch.nn.Module, tuple], torch.Tensor]
    validate: Callable[[torch.nn.Module], dict]
    card: Callable[[dict], dict]
    load_shipped: Callable[[], torch.nn.Module]
    #: Fine-tuning: how much later weights must beat the starting weights' validation score by
    #: (a validation set's noise must not replace them).
    fine_tune_margin: float = 0.0


def run_training(task: TrainingTask, out_dir: str | Path, resume: bool = False,
                 log: Callable[[str], None] = print,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Optimise ``task.model``, validating, checkpointing and keeping the best weights.

    ``task.validate`` returns a dict with a "score" (higher is better); the best weights so far
    are written as ``best.safetensors`` with the model card ``task.card(report)``.
    ``progress(step, steps)`` is called after every step.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config, model = task.config, task.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    step, best_score, origin = 0, -math.inf, "scratch"
    if resume and (out / "checkpoint.safetensors").is_file():
        step, best_score = _load_checkpoint(out, model, optimizer)
        origin = f"checkpoint at step {step}"
    elif resume:
        shipped = task.load_shipped()
        if getattr(shipped, "config", None) == getattr(model, "config", None):
            model.load_state_dict(shipped.state_dict())
            origin = "shipped weights (no checkpoint found)"
        else:
            log(f"no checkpoint in {out} and the shipped {task.name} has another architecture: "
                "training from scratch")
    log(f"training {task.name} from {origin}, {config.steps} steps, output {out}")
    command = " ".join(shlex.quote(a) for a in ["smlm-diffusion", *sys.argv[1:]])
    started = time.time()

    def validate_and_keep(at: int, best: float, losses: list[float]) -> float:
        """Validate, log, and save the weights as the best when they beat ``best``."""
        model.eval()
        report = task.validate(model)
        model.train()
        entry = {"step": at, "loss": float(np.mean(losses)) if losses else None,
                 "time_s": time.time() - started,
                 **{k: v for k, v in report.items() if np.isscalar(v)}}
        with open(out / LOG_NAME, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        log(json.dumps(entry))
        if report["score"] <= best:
            return best
        card = {"name": task.name, "package_version": __version__,
                "architecture": dict(model.config), "training_command": command,
                "training": asdict(config), "step": at, "seed": config.seed,
                "origin": origin, "validation": report, **task.card(report)}
        save_weights(model, out / "best.safetensors", card)
        log(f"new best weights at step {at}: score {report['score']:.4f}")
        return float(report["score"])

    if step == 0 and origin != "scratch":
        # fine-tuning: the starting weights are a candidate, so the result is never worse
        # than them on the validation set, and stays them unless beaten by the margin
        best_score = validate_and_keep(0, best_score, []) + task.fine_tune_margin
    model.train()
    losses: list[float] = []
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        loss = task.loss(model, task.batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if progress is not None:
            progress(step, config.steps)
        if step % config.validate_every == 0 or step == config.steps:
            best_score = validate_and_keep(step, best_score, losses)
            losses = []
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_checkpoint(out, model, optimizer, step, config, best_score)
    return out / "best.safetensors"


def train_kde_cnn(
    out_dir: str | Path,
    config: KdeTrainingConfig,
    resume: bool = False,
    log: Callable[[str], None] = print,
    validation: dict[str, SimulationConfig] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train the KDE CNN; returns the path of the best weights (``best.safetensors``).

    ``validation`` replaces the default validation conditions (named simulation configs)."""
    torch.manual_seed(config.seed)
    data = validation_set(config.validation_frames, conditions=validation)

    task = TrainingTask(
        name=KDE_CNN_NAME,
        model=KdeCnn(**config.architecture),
        config=config,
        batch=lambda step: training_batch(config, step),
        loss=lambda model, batch: torch.nn.functional.mse_loss(model(batch[0]), batch[1]),
        validate=lambda model: validate_kde_cnn(model, data, config.selection),
        card=lambda report: {"model": "KDE CNN (Deep-STORM-like, 4x upsampling)",
                             "detection_threshold": report["threshold"],
                             "kde_sigma_fine_px": config.kde_sigma_px, "upsampling": 4},
        load_shipped=lambda: load_kde_cnn(KDE_CNN_NAME)[0],
        fine_tune_margin=config.fine_tune_margin,
    )
    return run_training(task, out_dir, resume, log, progress)


@dataclass
class DiffusionTrainingConfig:
    """Configuration of a conditional-denoiser training run (recorded in the model card)."""

    steps: int = 4000
    batch_size: int = 8
    frame_size: int = 32
    learning_rate: float = 5e-4
    warmup_steps: int = 200
    seed: int = 0
    checkpoint_every: int = 100
    validate_every: int = 250
    validation_frames: int = 4
    prediction: str = "v"
    snr_clip: tuple[float, float] = (1.0, 5.0)
    # Without clipping, runs at this learning rate collapsed twice to the all-zero output
    # after a loss spike (validation loss stuck at its trivial value).
    grad_clip: float | None = 1.0
    kde: KdeTrainingConfig = field(default_factory=KdeTrainingConfig)
    architecture: dict = field(default_factory=lambda: dict(ConditionalDenoiser().config))


def diffusion_batch(config: DiffusionTrainingConfig, cnn: KdeCnn, step: int,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(residual target r, CNN estimate y_hat, network input x) for one step."""
    kde_config = replace(config.kde, batch_size=config.batch_size, frame_size=config.frame_size,
                         seed=config.seed + 7919)
    inputs, targets = training_batch(kde_config, step)
    with torch.inference_mode():
        y_hat = cnn(inputs)
    return (targets - y_hat).clone() * RESIDUAL_SCALE, y_hat.clone(), inputs


def denoiser_loss(model: ConditionalDenoiser, batch: tuple, config: DiffusionTrainingConfig,
                  generator=None) -> torch.Tensor:
    """Noise- or velocity-prediction loss of the conditional denoiser on one batch."""
    residual, y_hat, inputs = batch
    return diffusion_loss(lambda y_t, snr: model(y_t, y_hat, inputs, snr), residual, generator,
                          config.prediction, tuple(config.snr_clip))


def train_denoiser(
    out_dir: str | Path,
    config: DiffusionTrainingConfig,
    resume: bool = False,
    log: Callable[[str], None] = print,
    kde_weights: str | Path = KDE_CNN_NAME,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train the conditional denoiser on pairs (true KDE, CNN's KDE) of simulated frames, with the
    shipped KDE CNN (or ``kde_weights``) frozen."""
    torch.manual_seed(config.seed)
    cnn, cnn_card = load_kde_cnn(kde_weights)
    validation = [diffusion_batch(config, cnn, VALIDATION_SEED + k)
                  for k in range(config.validation_frames)]

    def validate(model: torch.nn.Module) -> dict:
        generator = torch.Generator().manual_seed(12345)
        with torch.inference_mode():
            loss = float(np.mean([denoiser_loss(model, b, config, generator).item()
                                  for b in validation]))
        return {"score": -loss, "validation_loss": loss}

    task = TrainingTask(
        name=DENOISER_NAME,
        model=ConditionalDenoiser(**config.architecture),
        config=config,
        # The noise and noise levels of a step come from (seed, step) like its data, so a resumed
        # run continues exactly as an uninterrupted one would.
        batch=lambda step: (*diffusion_batch(config, cnn, step), step),
        loss=lambda model, batch: denoiser_loss(
            model, batch[:3], config, torch.Generator().manual_seed(config.seed * 1_000_003
                                                                    + batch[3])),
        validate=validate,
        card=lambda report: {"model": f"conditional DDPM denoiser ({config.prediction} "
                                      "prediction)",
                             "prediction": config.prediction,
                             "loss_snr_clip": list(config.snr_clip),
                             "sampling_seed": SEED_SEMANTICS,
                             "schedule": {"type": "cosine", "T": T_STEPS,
                                          "offset": COSINE_OFFSET,
                                          "final_gamma": float(cosine_gammas()[-1])},
                             "residual_scale": RESIDUAL_SCALE,
                             "kde_cnn_sha256": cnn_card.sha256,
                             "detection_threshold": cnn_card.detection_threshold},
        load_shipped=lambda: load_denoiser(DENOISER_NAME)[0],
    )
    return run_training(task, out_dir, resume, log, progress)
