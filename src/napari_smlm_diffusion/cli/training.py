"""The ``train-diffusion`` and ``train-kde`` commands."""

from __future__ import annotations

import argparse

from .options import (
    add_training_options,
)


def cmd_train_diffusion(args: argparse.Namespace) -> None:
    from ..train import DiffusionTrainingConfig, train_denoiser

    config = DiffusionTrainingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    best = train_denoiser(args.out_dir, config, resume=args.resume)
    print(f"best weights: {best}")


def cmd_train_kde(args: argparse.Namespace) -> None:
    from ..train import KdeTrainingConfig, train_kde_cnn

    config = KdeTrainingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    best = train_kde_cnn(args.out_dir, config, resume=args.resume)
    print(f"best weights: {best}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training commands."""
    td = subparsers.add_parser(
        "train-diffusion", help="train the conditional diffusion denoiser",
        description="Train the conditional denoiser on simulated frames (same conditions as "
                    "train-kde) against the residual between the true KDE and the shipped KDE "
                    "CNN's estimate. Writes checkpoints, log.jsonl and best.safetensors + "
                    "best.json (model card) to OUT_DIR.")
    add_training_options(td, steps=4000, batch_size=8)
    td.set_defaults(func=cmd_train_diffusion)

    tk = subparsers.add_parser(
        "train-kde", help="train the KDE CNN on simulated data",
        description="Train the KDE CNN on freshly simulated frames (densities 0.1-6 per um^2, "
                    "500-10000 photons, background 10-150 photons/px, PSF sigma 0.8-1.6 px, sCMOS "
                    "and EMCCD, all layouts). Writes checkpoints, log.jsonl and best.safetensors + "
                    "best.json (model card) to OUT_DIR.")
    add_training_options(tk, steps=6000, batch_size=16)
    tk.set_defaults(func=cmd_train_kde)
