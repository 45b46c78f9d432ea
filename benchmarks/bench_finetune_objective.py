"""Why does adapt's KDE fine-tune not find more molecules? Training loss vs detection score.

adapt fine-tunes the KDE CNN with the loss it was trained with: the mean squared error between
its output and the KDE of the true positions. Its weights are kept only when they find more
molecules (mean Jaccard index at 100 nm over the detection thresholds, as adapt selects) on the
matched validation sets. This benchmark fine-tunes the shipped CNN on adapt's matched training
data for a corner of the training ranges (:data:`training_data.MICROSCOPE_CORNERS`, the setup at
1 per um^2 with the corner's mean photons) and records, every ``--every`` steps:

- the mean squared error on held-out matched frames with their KDE (32 per density, seeds
  990000+), the quantity the fine-tune lowers;
- the best mean Jaccard index at 100 nm over the thresholds on ``--frames`` validation frames
  per density (a third of, at and three times the setup's density, adapt's conditions), with the
  Jaccard per density and the mean efficiency at 250 nm at that threshold;
- at the densest condition, the best Jaccard at its own threshold with its recall and precision
  (do molecules merge, or do false detections appear?).

Variants (``--variants``): ``adapt`` (adapt's settings: 2e-4, half of each batch from the generic
ranges), ``low-lr-frozen-bn`` (5e-5, batch-norm statistics frozen at the shipped ones),
``no-replay`` (as the last, all frames matched), ``l1`` (as ``low-lr-frozen-bn`` plus 0.1 x the
mean absolute output, Deep-STORM's sparsity term), ``peak-weighted`` (as ``low-lr-frozen-bn``, each
pixel's squared error weighted by 1 + 10 x its target KDE: the molecules' peaks count more than
the space between them, which the plain mean squared error blurs over where molecules crowd),
``sharp-0.7`` and ``sharp-0.5`` (as ``low-lr-frozen-bn``, with target KDEs of kernel sigma 0.7
and 0.5 fine pixels instead of 1: narrower peaks; their MSE column is still to the sigma-1 KDE,
so it is not comparable).

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune_objective.py \
        --case bright/130nm/bg250 [--steps 300 --every 100 --frames 128]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from napari_smlm_diffusion.adapt import Setup, matched_conditions, matched_training
from napari_smlm_diffusion.calibration.detection_thresholds import CANDIDATES
from napari_smlm_diffusion.kde import DEFAULT_KDE_SIGMA_PX, find_peaks_in_frames
from napari_smlm_diffusion.metrics import evaluate
from napari_smlm_diffusion.preprocess import normalize_frames
from napari_smlm_diffusion.pretrained import load_kde_cnn
from napari_smlm_diffusion.simulate import simulate_frames
from napari_smlm_diffusion.train import learning_rate, validate_kde_cnn
from napari_smlm_diffusion.training_data import (
    MICROSCOPE_CORNERS,
    ValidationSet,
    training_batch,
    validation_set,
)
from napari_smlm_diffusion.weights import KDE_CNN_NAME

RESULTS = Path(__file__).resolve().parent / "results"
MSE_SEED = 990_000
MSE_FRAMES = 32


@dataclass(frozen=True)
class Variant:
    """How one fine-tune differs from adapt's."""

    learning_rate: float
    replay_fraction: float
    freeze_batch_norm: bool
    l1_weight: float = 0.0
    peak_weight: float = 0.0
    target_sigma_px: float = DEFAULT_KDE_SIGMA_PX


VARIANTS = {
    "adapt": Variant(2e-4, 0.5, False),
    "low-lr-frozen-bn": Variant(5e-5, 0.5, True),
    "no-replay": Variant(5e-5, 0.0, True),
    "l1": Variant(5e-5, 0.5, True, 0.1),
    "peak-weighted": Variant(5e-5, 0.5, True, peak_weight=10.0),
    "sharp-0.7": Variant(5e-5, 0.5, True, target_sigma_px=0.7),
    "sharp-0.5": Variant(5e-5, 0.5, True, target_sigma_px=0.5),
}


def corner_setup(case: str) -> Setup:
    """The corner's microscope at 1 per um^2 with its mean photons, as adapt would measure it."""
    scope = MICROSCOPE_CORNERS[case]
    return Setup(camera=scope.camera, psf_sigma_nm=scope.psf_sigma_px * scope.camera.pixel_size,
                 photons=float(np.mean(scope.photons)), background=scope.background, density=1.0)


def kde_frames(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out matched frames (network input) and their KDE targets."""
    inputs, targets = [], []
    for k, sim in enumerate(matched_conditions(setup).values()):
        for frame in simulate_frames(MSE_FRAMES, sim, seed=MSE_SEED + k, with_kde=True):
            inputs.append(normalize_frames(frame.adu, sim.camera))
            targets.append(torch.from_numpy(frame.kde)[None, None])
    return torch.cat(inputs), torch.cat(targets)


def densest_detection(model: torch.nn.Module, data: ValidationSet) -> dict:
    """Best Jaccard at 100 nm at the densest condition over the thresholds, with its recall and
    precision."""
    frames, truth, sim = data.frames[-1], data.truths[-1], data.configs[-1]
    with torch.inference_mode():
        kdes = model(normalize_frames(frames, sim.camera))[:, 0].numpy()
    scores = [evaluate(truth, find_peaks_in_frames(kdes, sim.fine_pixel_nm, t), 100.0)
              for t in CANDIDATES]
    best = max(scores, key=lambda m: m["jaccard"])
    return {k: round(float(best[k]), 2) for k in ("jaccard", "recall", "precision")}


def score(model: torch.nn.Module, data: ValidationSet, mse_set: tuple) -> dict:
    """The record of one validation (``model`` in eval mode)."""
    with torch.inference_mode():
        mse = float(torch.nn.functional.mse_loss(model(mse_set[0]), mse_set[1]))
    report = validate_kde_cnn(model, data, "jaccard")
    return {"mse": mse, "jaccard_100nm": report["score"], "threshold": report["threshold"],
            "efficiency": report["mean_efficiency"],
            "per_density": {k: v["jaccard_100nm"] for k, v in report["per_condition"].items()},
            "densest": densest_detection(model, data)}


def set_training_mode(model: torch.nn.Module, variant: Variant) -> None:
    """Train mode, with the batch-norm layers in eval mode when their statistics are frozen."""
    model.train()
    if variant.freeze_batch_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()


def fine_tune(setup: Setup, variant: Variant, steps: int, every: int, data: ValidationSet,
              mse_set: tuple) -> list[dict]:
    """Fine-tune the shipped CNN on adapt's matched data; the validation records every ``every``
    steps (step 0: the shipped CNN)."""
    config = replace(matched_training(setup, steps, seed=0),
                     learning_rate=variant.learning_rate,
                     replay_fraction=variant.replay_fraction,
                     kde_sigma_px=variant.target_sigma_px)
    model = load_kde_cnn(KDE_CNN_NAME)[0]
    model.eval()
    records = [{"step": 0, **score(model, data, mse_set)}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    set_training_mode(model, variant)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        inputs, targets = training_batch(config, step)
        output = model(inputs)
        weights = 1.0 + variant.peak_weight * targets
        loss = ((weights * (output - targets) ** 2).mean()
                + variant.l1_weight * output.abs().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if (step + 1) % every == 0:
            model.eval()
            records.append({"step": step + 1, **score(model, data, mse_set)})
            print(json.dumps(records[-1]), flush=True)
            set_training_mode(model, variant)
    return records


def table(case: str, results: dict[str, list[dict]]) -> str:
    """Markdown table of all variants' records."""
    densities = list(next(iter(results.values()))[0]["per_density"])
    head = ("| variant | step | MSE (1e-3) | J 100 nm mean | threshold | "
            + " | ".join(f"J {d}" for d in densities)
            + " | efficiency | densest: best J / recall / precision |")
    lines = [f"### {case}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, records in results.items():
        for r in records:
            per = " | ".join(f"{r['per_density'][d]:.1f}" for d in densities)
            dense = r["densest"]
            lines.append(f"| {name} | {r['step']} | {r['mse'] * 1e3:.2f} | "
                         f"{r['jaccard_100nm']:.1f} | {r['threshold']:g} | {per} | "
                         f"{r['efficiency']:.1f} | {dense['jaccard']:.1f} / {dense['recall']:.1f}"
                         f" / {dense['precision']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="bright/130nm/bg250", choices=list(MICROSCOPE_CORNERS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--frames", type=int, default=128, help="validation frames per density")
    parser.add_argument("--out", type=Path, default=None,
                        help="results prefix (default benchmarks/results/finetune_objective_CASE)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup = corner_setup(args.case)
    data = validation_set(args.frames, conditions=matched_conditions(setup))
    mse_set = kde_frames(setup)
    results = {name: fine_tune(setup, VARIANTS[name], args.steps, args.every, data, mse_set)
               for name in args.variants}
    out = args.out or RESULTS / f"finetune_objective_{args.case.split('/')[0]}"
    command = ("OMP_NUM_THREADS=1 python benchmarks/bench_finetune_objective.py --case "
               f"{args.case} --steps {args.steps} --every {args.every} --frames {args.frames}")
    out.with_suffix(".json").write_text(json.dumps({"command": command, "setup": setup.to_dict(),
                                                    "results": results}, indent=1))
    out.with_suffix(".md").write_text(f"Fine-tune objective ({command})\n\n"
                                      + table(args.case, results))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
