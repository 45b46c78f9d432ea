"""The ``train-diffusion`` and ``train-kde`` commands."""

from __future__ import annotations

import argparse

from .options import add_training_options, positive_int


def cmd_train_diffusion(args: argparse.Namespace) -> None:
    from ..train import DiffusionTrainingConfig, train_denoiser

    config = DiffusionTrainingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    best = train_denoiser(args.out_dir, config, resume=args.resume)
    print(f"best weights: {best}")


def cmd_train_kde(args: argparse.Namespace) -> None:
    from ..models.kde_cnn import KdeCnn
    from ..train import KdeTrainingConfig, train_kde_cnn

    architecture = KdeCnn(width=args.width, up_channels=tuple(args.up_channels)).config
    config = KdeTrainingConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                               architecture=architecture)
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
        description="Train the KDE CNN on freshly simulated frames over the wide training "
                    "ranges (pixels 50-200 nm, PSF sigma 0.7-2.5 px, 100-50,000 photons, "
                    "background 1-500 photons/px, 0.05-8 molecules per um^2, sCMOS and EMCCD, "
                    "blinking, all layouts). Writes checkpoints, log.jsonl and best.safetensors + "
                    "best.json (model card) to OUT_DIR.")
    add_training_options(tk, steps=20000, batch_size=16)
    tk.add_argument("--width", type=positive_int, default=32,
                    help="channels of the context module (default 32, the shipped network; 16 "
                    "runs in about 0.6x the time)")
    tk.add_argument("--up-channels", type=positive_int, nargs=2, default=[8, 4],
                    metavar=("FIRST", "SECOND"),
                    help="channels after the two 2x upsampling stages (default 8 4)")
    tk.set_defaults(func=cmd_train_kde)
