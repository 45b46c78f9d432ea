"""Does ``smlm-diffusion adapt`` help? Generic vs adapted models on one microscope, with Picasso.

For each case (a corner of the training ranges, :data:`training_data.MICROSCOPE_CORNERS`):

1. simulate the user's stack: ``--stack-frames`` frames of 64x64 px of blinking fluorophores on
   filaments at 1 per um^2 (seed 660000 + case index), written as a TIFF with the camera metadata,
   as ``smlm-diffusion simulate`` does;
2. run ``smlm-diffusion adapt STACK -o DIR`` in a subprocess exactly as a user would (photons,
   background and density measured on the stack by the inspection), with ``OMP_NUM_THREADS`` =
   ``--threads``; wall time and the CPU time of the process are recorded;
3. score the generic (shipped) and the adapted KDE CNN next to Picasso at its best threshold on
   the corner's test sets of ``bench_kde.py --suite microscopes`` (0.3, 1 and 3 per um^2, same
   seeds, so the generic row equals that benchmark's), and the posterior of both model pairs on
   ``--posterior-frames`` frames per density (``bench_posterior``'s calibration metrics: RMS of
   error / reported sigma per axis, Spearman of sigma vs |error| next to the CRLB's).

    OMP_NUM_THREADS=1 /work/venv-bench/bin/python benchmarks/bench_adapt.py \
        [--cases dim/65nm/psf1.9 bright/130nm/bg250] [--frames 100] [--work DIR]

The adapted models stay in ``--work`` (re-running resumes a stopped adaptation and re-scores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_smlm_diffusion.calibration.validation_runs import (
    calibration_regimes,
    matched_table,
    regime_stack,
)
from napari_smlm_diffusion.io import write_tiff
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
from napari_smlm_diffusion.posterior_settings import DEFAULT_POSTERIOR
from napari_smlm_diffusion.pretrained import model_folder_weights
from napari_smlm_diffusion.simulate import simulate_stack
from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS, REALISTIC_BLINKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_kde  # noqa: E402  (sibling benchmark: test sets, methods, scoring)
import bench_posterior  # noqa: E402

CASES = ("dim/65nm/psf1.9", "bright/130nm/bg250")
STACK_SEED = 660_000
POSTERIOR_SEED = 710_000
RESULTS = Path(__file__).resolve().parent / "results" / "bench_adapt"


def user_stack(case: str, index: int, frames: int, folder: Path) -> Path:
    """The simulated acquisition the user adapts to, as a TIFF with camera metadata."""
    scope = MICROSCOPE_CORNERS[case]
    path = folder / "stack.tif"
    if path.is_file():
        return path
    stack = simulate_stack(frames, scope.config(64, 1.0), seed=STACK_SEED + index, with_kde=False)
    psf_nm = scope.psf_sigma_px * scope.camera.pixel_size
    metadata = {"camera": scope.camera.to_dict(), "psf_sigma_nm": psf_nm, "simulated": True,
                "density_per_um2": 1.0, "layout": "filaments",
                "blinking": vars(REALISTIC_BLINKING), "seed": STACK_SEED + index}
    folder.mkdir(parents=True, exist_ok=True)
    write_tiff(path, stack.frames, pixel_size_nm=scope.camera.pixel_size, metadata=metadata)
    return path


def run_adapt(stack: Path, model_dir: Path, threads: int, extra: list[str]) -> dict:
    """``smlm-diffusion adapt`` in a subprocess: its wall and CPU time, its last lines."""
    command = [sys.executable, "-m", "napari_smlm_diffusion.cli", "adapt", str(stack),
               "-o", str(model_dir), "--resume", *extra]
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, **env}, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log = (done.stdout + done.stderr).strip().splitlines()
    print("\n".join(log[-6:]), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"adapt failed (exit {done.returncode}): {log[-1] if log else ''}")
    return {"command": " ".join(command[2:]), "threads": threads, "wall_s": wall, "cpu_s": cpu,
            "log_tail": log[-12:]}


def localization_scores(case: str, kde_weights: Path, args) -> list[dict]:
    """bench_kde's test sets of this corner: generic, adapted and Picasso."""
    methods = {"generic": bench_kde.make_ours(), "adapted": bench_kde.make_ours(
        weights=str(kde_weights))}
    if bench_kde.picasso_baseline.picasso_version() != "not installed":
        methods["picasso"] = None
    options = argparse.Namespace(size=64, frames=args.frames, box=7, border_px=4.0)
    records = []
    for condition in bench_kde.microscope_conditions():
        if condition.label == case:
            print(f"{condition.name} (seed {condition.seed})", flush=True)
            records.append(bench_kde.run_condition(condition, methods, options))
    return records


def posterior_scores(case: str, model_dir: Path, frames: int) -> list[dict]:
    """Calibration of the posterior with the generic and the adapted model pair."""
    kde_weights, denoiser_weights = model_folder_weights(model_dir)
    engines = {"generic": PosteriorEngine.load(device="cpu", notify=lambda _: None),
               "adapted": PosteriorEngine.load(str(kde_weights), str(denoiser_weights),
                                               device="cpu", notify=lambda _: None)}
    settings = PosteriorSettings(samples=DEFAULT_POSTERIOR.samples, steps=DEFAULT_POSTERIOR.steps,
                                 sampler=DEFAULT_POSTERIOR.sampler)
    rows = []
    for k, regime in enumerate(calibration_regimes(64, microscopes=[case])):
        stack = regime_stack(regime.config, frames, POSTERIOR_SEED + k)
        row = {"regime": regime.name, "seed": POSTERIOR_SEED + k}
        for name, engine in engines.items():
            _, table, seconds = bench_posterior.run_setting(engine, stack, regime, settings)
            scored = bench_kde.evaluate(stack.truth, table)
            row[name] = {"jaccard": scored["jaccard"], "rmse_nm": scored["rmse_lateral_nm"],
                         "seconds_per_frame": seconds,
                         **bench_posterior.molecule_calibration(
                             matched_table(stack.truth, table, regime))}
            row[name].pop("curve_sigma_vs_rmse", None)
        print(json.dumps({"regime": regime.name, **{
            name: {key: round(value, 2) for key, value in row[name].items()
                   if isinstance(value, float)} for name in engines}}), flush=True)
        rows.append(row)
    return rows


def _cell(entry: dict, key: str, digits: int = 1) -> str:
    value = entry.get(key)
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    """Tables for docs/benchmarks.md."""
    lines = [f"Adaptation benchmark ({results['command']})", ""]
    for case in results["cases"]:
        adapt = case["adapt"]
        lines += [f"### {case['case']}", "",
                  f"`{adapt['command']}` with {adapt['threads']} thread(s): "
                  f"{adapt['wall_s'] / 60:.1f} min wall, {adapt['cpu_s'] / 60:.1f} CPU-min.", "",
                  "| test set | J generic | J adapted | J Picasso | RMSE generic | RMSE adapted "
                  "| RMSE Picasso | efficiency generic | efficiency adapted | efficiency Picasso |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for record in case["localization"]:
            methods = record["methods"]
            cells = [record["condition"]]
            for key in ("jaccard", "rmse_lateral_nm", "efficiency"):
                cells += [_cell(methods.get(m, {}).get("tol250", {}), key)
                          for m in ("generic", "adapted", "picasso")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| regime | RMS z x, y generic | RMS z x, y adapted | Spearman sigma "
                  "generic / adapted (CRLB) | J posterior generic / adapted |",
                  "|---|---|---|---|---|"]
        for row in case["posterior"]:
            g, a = row["generic"], row["adapted"]
            lines.append(
                f"| {row['regime']} | {_cell(g, 'rms_z_x', 2)}, {_cell(g, 'rms_z_y', 2)} | "
                f"{_cell(a, 'rms_z_x', 2)}, {_cell(a, 'rms_z_y', 2)} | "
                f"{_cell(g, 'spearman_sigma', 2)} / {_cell(a, 'spearman_sigma', 2)} "
                f"({_cell(a, 'spearman_crlb', 2)}) | {_cell(g, 'jaccard')} / "
                f"{_cell(a, 'jaccard')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(MICROSCOPE_CORNERS))
    parser.add_argument("--frames", type=int, default=100, help="test frames per density")
    parser.add_argument("--posterior-frames", type=int, default=8,
                        help="posterior test frames per density")
    parser.add_argument("--stack-frames", type=int, default=200,
                        help="frames of the simulated acquisition adapted to")
    parser.add_argument("--threads", type=int, default=1, help="threads of the adapt process")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-adapt"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("adapt_options", nargs="*",
                        help="extra options for adapt after --, e.g. -- --kde-steps 800")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {"command": " ".join(["python benchmarks/bench_adapt.py", *(argv or sys.argv[1:])]),
               "cases": []}
    for index, case in enumerate(args.cases):
        folder = args.work / case.replace("/", "_")
        stack = user_stack(case, index, args.stack_frames, folder)
        print(f"== {case}: adapting to {stack}", flush=True)
        adapt = run_adapt(stack, folder / "models", args.threads, args.adapt_options)
        kde_weights, _ = model_folder_weights(folder / "models")
        results["cases"].append({
            "case": case, "adapt": adapt,
            "localization": localization_scores(case, kde_weights, args),
            "posterior": posterior_scores(case, folder / "models", args.posterior_frames)})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps(bench_kde._plain(results), indent=1, allow_nan=False))
        args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
