"""Store a new calibration or benchmark record in a shipped model card (weights unchanged).

Usage: python scripts/update_card.py NAME [--calibration JSON] [--benchmark JSON]

The weights' hash is checked first; the card is rewritten atomically with the same hash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export_weights import read_json

from napari_smlm_diffusion.pretrained import (
    load_verified_state,
    update_card,
    weights_dir,
    write_model_card,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="shipped weights, e.g. denoiser")
    parser.add_argument("--calibration", type=Path, help="JSON of bench_posterior.py --calibrate")
    parser.add_argument("--benchmark", type=Path, help="benchmark JSON to store in the card")
    args = parser.parse_args()
    _, card = load_verified_state(args.name)
    card = update_card(card, read_json(args.calibration), read_json(args.benchmark))
    saved = write_model_card(weights_dir() / f"{args.name}.safetensors", card)
    print(f"updated the card of {saved['file']} (sha256 {saved['sha256'][:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
