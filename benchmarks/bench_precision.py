"""Where the localization error at low density comes from: isolated vs crowded emitters.

On the 0.3/um^2 test sets of ``bench_kde.py`` (same seeds), the matched emitters (250 nm) are
split by the distance to their nearest true neighbour in the same frame: isolated (more than
ISOLATION_NM) or crowded. For each group, the lateral RMSE of our localizations (KDE peaks, and
the joint fit on the raw frame) is set against sqrt(mean CRLB) of the same emitters (the
single-emitter bound in detected photo-electrons, ``bench_kde.crlb_summary``). The single-emitter
bound ignores the neighbours' light, so the crowded group shows what overlaps cost.

    python benchmarks/bench_precision.py [--frames 200] [--out benchmarks/results/precision.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from bench_kde import BACKGROUND, PSF_SIGMA_PX, conditions, crlb_summary, make_ours

from napari_smlm_diffusion.metrics import match_localizations
from napari_smlm_diffusion.simulate import simulate_stack

ISOLATION_NM = 1000.0


def nearest_neighbour_nm(truth: pd.DataFrame) -> np.ndarray:
    """Distance from each true emitter to the nearest other one of its frame (inf if alone)."""
    nearest = np.full(len(truth), np.inf)
    for _, rows in truth.groupby("frame").indices.items():
        points = truth[["x_nm", "y_nm"]].to_numpy()[rows]
        distance = np.hypot(*(points[:, None] - points[None]).transpose(2, 0, 1))
        np.fill_diagonal(distance, np.inf)
        nearest[rows] = distance.min(axis=1) if len(rows) > 1 else np.inf
    return nearest


def group_rows(truth: pd.DataFrame, locs: pd.DataFrame, camera, isolated: np.ndarray) -> dict:
    """RMSE and sqrt(mean CRLB) of the matched emitters, all and by isolation."""
    match = match_localizations(truth, locs, 250.0)
    error2 = match.dx**2 + match.dy**2
    groups = {"all": np.ones(match.tp, bool), "isolated": isolated[match.truth_index],
              "crowded": ~isolated[match.truth_index]}
    out = {}
    for name, keep in groups.items():
        bound = crlb_summary(truth.iloc[match.truth_index[keep]], camera, PSF_SIGMA_PX,
                             BACKGROUND)["lateral_nm"]
        rmse = float(np.sqrt(error2[keep].mean()))
        out[name] = {"share": float(keep.mean()), "rmse_nm": rmse, "crlb_nm": bound,
                     "ratio": rmse / bound}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision.md"))
    args = parser.parse_args()
    methods = {"ours": make_ours(refine=False), "ours-fit": make_ours(refine=True)}
    lines = [f"# Low-density precision: isolated (nearest neighbour > {ISOLATION_NM:.0f} nm) vs "
             f"crowded emitters\n", f"{args.frames} frames per set (bench_kde.py seeds), 250 nm "
             "matching; RMSE lateral / sqrt(mean single-emitter CRLB) of the same emitters.\n",
             "| set | method | all: RMSE / CRLB nm (ratio) | isolated: share, RMSE / CRLB "
             "(ratio) | crowded: share, RMSE / CRLB (ratio) |", "|---|---|---|---|---|"]
    for condition in conditions(densities=(0.3,)):
        camera = condition.camera
        stack = simulate_stack(args.frames, condition.config(64), seed=condition.seed)
        isolated = nearest_neighbour_nm(stack.truth) > ISOLATION_NM
        for name, localize in methods.items():
            locs = localize(stack.frames, camera, PSF_SIGMA_PX * camera.pixel_size)
            r = group_rows(stack.truth, locs, camera, isolated)
            cells = [f"{r[g]['rmse_nm']:.1f} / {r[g]['crlb_nm']:.1f} ({r[g]['ratio']:.2f})"
                     for g in ("all", "isolated", "crowded")]
            lines.append(f"| {condition.name} | {name} | {cells[0]}"
                         f" | {r['isolated']['share']:.0%}, {cells[1]} | "
                         f"{r['crowded']['share']:.0%}, {cells[2]} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
