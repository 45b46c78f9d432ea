"""Copy a run's best weights into the package with an updated model card.

Usage: python scripts/export_weights.py RUN_DIR NAME [--history LOG] [--benchmark JSON]
       [--calibration JSON] [--status TEXT] [--field KEY=TEXT ...] [--force]

The card keeps the training record written by the run, adds the history of resumed invocations
(from the run's console log), optional benchmark results, and a fresh SHA-256. The weights are
exported only when their validation score is better than the shipped model's (or nothing ships).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from safetensors.torch import load_file

from napari_smlm_diffusion.pretrained import (
    read_model_card,
    save_weights,
    update_card,
    weights_dir,
)


def read_json(path: Path | None) -> dict | None:
    """The JSON object in ``path`` (None without a path)."""
    return None if path is None else json.loads(path.read_text())


class _StateHolder:
    """Minimal module-like object so save_weights can write a loaded state dict."""

    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return self._state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--history", type=Path, help="console log of the training invocations")
    parser.add_argument("--benchmark", type=Path, help="benchmark JSON to store in the card")
    parser.add_argument("--force", action="store_true", help="export even if not better")
    parser.add_argument("--status", help="a warning shown whenever the weights are loaded, e.g. "
                        "'partially trained, not benchmarked'")
    parser.add_argument("--calibration", type=Path, help="posterior-mean threshold and "
                        "uncertainty recalibration of the denoiser (JSON written by "
                        "benchmarks/bench_posterior.py --calibrate)")
    parser.add_argument("--field", action="append", default=[], metavar="KEY=TEXT",
                        help="a documentation field to add to the card (repeatable)")
    args = parser.parse_args()

    card = read_model_card(args.run_dir / "best.json")
    card["validation"].setdefault("score", card["validation"].get("mean_efficiency"))
    target = weights_dir() / f"{args.name}.safetensors"
    if target.with_suffix(".json").is_file() and not args.force:
        shipped = read_model_card(target.with_suffix(".json"))
        if shipped["validation"]["score"] >= card["validation"]["score"]:
            print(f"not exported: shipped score {shipped['validation']['score']:.4f} >= "
                  f"{card['validation']['score']:.4f}")
            return 1
    if args.history:
        card["training_history"] = [
            line.strip() for line in args.history.read_text().splitlines()
            if re.match(r"^training .* from ", line)
        ]
    if args.status:
        card["status"] = args.status
    for field in args.field:
        key, _, text = field.partition("=")
        card[key] = text
    card = update_card(card, read_json(args.calibration), read_json(args.benchmark))
    card.pop("sha256", None)
    card.pop("file", None)
    state = load_file(str(args.run_dir / "best.safetensors"))
    saved = save_weights(_StateHolder(state), target, card)
    print(f"exported {target} ({target.stat().st_size / 1e6:.2f} MB), sha256 {saved['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
