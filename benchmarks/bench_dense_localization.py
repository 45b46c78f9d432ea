"""Localization at EPFL-challenge density: KDE CNNs side by side, block-sparse vs dense precision,
and Picasso.

Simulates 64x64 sCMOS frames with ~140 molecules each (uniform layout), runs each given KDE CNN
(``--weights``, several: timed side by side) and the default localization (peaks, photometry,
precision), and times, interleaved in one run: the CNN alone, CNN + localization (precision per
cluster of overlapping emitters, the package default) on 1 and 2 torch threads (1 thread: the
localization runs beside the network in a second thread), with the first network also with one
dense inverse per frame (the previous code); the localization alone on precomputed KDEs; Picasso
(net gradient + ``gaussmle``, threshold chosen for the best Jaccard index on the first frames) when
it can be imported; and CNN + localization on a local dask cluster of ``--workers`` processes. Also
compares the two precisions on the same frames (relative difference of the reported per-axis
uncertainties), counts the unresolved localizations and scores each network's table (Jaccard index
at 250 nm).

    python benchmarks/bench_dense_localization.py [--frames 128] [--repeats 3] [--workers 2]
        [--weights kde_cnn [PATH.safetensors ...]] [--out benchmarks/results/dense_localization.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from napari_smlm_diffusion import refine
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.geometry import DEFAULT_PSF_SIGMA_PX
from napari_smlm_diffusion.localize import localizations_from_kdes
from napari_smlm_diffusion.metrics import evaluate
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack
from napari_smlm_diffusion.weights import KDE_CNN_NAME

sys.path.insert(0, str(Path(__file__).parent))
from bench_throughput import best_fps  # noqa: E402
from picasso_baseline import best_threshold, picasso_localize, picasso_version  # noqa: E402

MOLECULES_PER_FRAME = 140
SIZE = 64


@contextmanager
def dense_precision() -> Iterator[None]:
    """The precision from one dense inverse per frame (all emitters one cluster)."""
    radius = refine.CLUSTER_RADIUS_SIGMAS
    refine.CLUSTER_RADIUS_SIGMAS = math.inf
    try:
        yield
    finally:
        refine.CLUSTER_RADIUS_SIGMAS = radius


def dense_run(frames: np.ndarray, camera, engine: KdeEngine, batch: int) -> pd.DataFrame:
    with dense_precision():
        return run_kde(frames, camera, engine, batch_size=batch).localizations


def cpu_fps(run, n_frames: int, repeats: int) -> float:
    """Frames per CPU-second of ``run`` (best of ``repeats``): what a single-threaded step
    achieves on an otherwise idle core, much less affected by other load than wall time."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return n_frames / best


def cluster_fps(frames: np.ndarray, camera, engine: KdeEngine, batch: int, repeats: int,
                workers: int, weights: str) -> dict:
    """CNN + localization on a local dask cluster of ``workers`` processes with one thread
    each (``localize --workers``): frames/s after the start of the cluster (timed apart), and
    whether the table equals the single-process one."""
    from napari_smlm_diffusion.dask_cluster import connect
    from napari_smlm_diffusion.kde_distributed import KdeSpec, distributed_kde_source

    start = time.perf_counter()
    with connect(workers=workers) as client:
        start_s = time.perf_counter() - start
        source = distributed_kde_source(client, KdeSpec(weights, torch_threads=1), frames,
                                        camera, None, notify=lambda _: None)
        runs = {"workers": lambda: run_kde(frames, camera, engine, batch_size=batch,
                                           source=source)}
        fps = best_fps(runs, len(frames), repeats)["workers"]
        table = runs["workers"]().localizations
    single = run_kde(frames, camera, engine, batch_size=batch).localizations
    return {"workers": workers, "fps": fps, "start_s": start_s,
            "table_equals_single_process": bool(table.equals(single))}


def compare(sparse: pd.DataFrame, dense: pd.DataFrame) -> dict:
    """Relative differences of the reported uncertainties, block-sparse vs dense."""
    out = {"localizations": len(sparse),
           "unresolved_fraction": float(1.0 - sparse["resolved"].mean()),
           "max_uncertainty_nm": float(sparse["uncertainty_nm"].max()),
           "resolved_flag_differs": int((sparse["resolved"] != dense["resolved"]).sum())}
    for column in ("uncertainty_x_nm", "uncertainty_y_nm"):
        rel = np.abs(sparse[column] / dense[column] - 1.0).to_numpy()
        out[column] = {"median": float(np.median(rel)), "p99": float(np.quantile(rel, 0.99)),
                       "max": float(rel.max())}
    return out


def localization_alone(engine: KdeEngine, frames: np.ndarray, camera, repeats: int,
                       with_dense: bool) -> dict:
    """Localization of precomputed KDEs on one core: frames/s and frames per CPU second,
    block-sparse (and dense)."""
    kdes = engine.predict(frames, camera)
    photons, indices = camera.adu_to_photons(frames), np.arange(len(frames))
    sigma_nm = DEFAULT_PSF_SIGMA_PX * camera.pixel_size  # as run_kde uses by default

    def sparse() -> pd.DataFrame:
        return localizations_from_kdes(kdes, photons, indices, camera, sigma_nm,
                                       engine.threshold_for(DEFAULT_PSF_SIGMA_PX),
                                       engine.upsampling)

    def dense() -> pd.DataFrame:
        with dense_precision():
            return sparse()

    runs = {"sparse": sparse, "dense": dense} if with_dense else {"sparse": sparse}
    return best_fps(runs, len(frames), repeats) | {
        f"{k} per CPU second": cpu_fps(run, len(frames), repeats) for k, run in runs.items()}


def pipeline_runs(engines: dict[str, KdeEngine], frames: np.ndarray, camera, batch: int,
                  threads: int) -> dict:
    """The timed CNN (+ localization) runs of every network at ``threads`` torch threads."""
    runs = {}
    for name, engine in engines.items():
        runs[f"{name} cnn"] = lambda e=engine: [e.predict(frames[i:i + batch], camera)
                                                 for i in range(0, len(frames), batch)]
        runs[f"{name} sparse"] = lambda e=engine: run_kde(frames, camera, e, batch_size=batch)
    first = next(iter(engines.values()))
    runs["dense"] = lambda: dense_run(frames, camera, first, batch)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2,
                        help="also time a local dask cluster of this many processes (0: no)")
    parser.add_argument("--weights", nargs="+", default=[KDE_CNN_NAME],
                        help="KDE CNNs: shipped models' names or .safetensors files with their "
                             "cards, timed side by side (the first one is also run with the "
                             "dense precision)")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/dense_localization.md"))
    args = parser.parse_args()
    camera = preset("sCMOS")
    area_um2 = (SIZE * camera.pixel_size / 1000.0) ** 2
    config = SimulationConfig(size=(SIZE, SIZE), density=MOLECULES_PER_FRAME / area_um2)
    stack = simulate_stack(args.frames, config, seed=180_000)
    frames, batch = stack.frames, args.batch
    engines = {name: KdeEngine.load(name, device="cpu") for name in args.weights}
    first_name, first = args.weights[0], engines[args.weights[0]]
    version = picasso_version()
    threshold = None
    if version != "not installed":
        threshold, _ = best_threshold(frames[:16], stack.truth[stack.truth.frame < 16], camera)
    alone = {name: localization_alone(engine, frames, camera, args.repeats, name == first_name)
             for name, engine in engines.items()}
    for name, fps in alone.items():
        print(f"{name}: localization alone (one core) {fps['sparse']:.0f} frames/s, "
              f"{fps['sparse per CPU second']:.0f} per CPU second", flush=True)
    results = {"frames": args.frames, "weights": args.weights,
               "molecules_per_frame": float(len(stack.truth) / args.frames),
               "picasso": version, "picasso_threshold_adu": threshold,
               "localization_alone_fps": alone, "fps": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs = pipeline_runs(engines, frames, camera, batch, threads)
        if threshold is not None:
            runs["picasso"] = lambda: picasso_localize(frames, camera, threshold)
        results["fps"][threads] = best_fps(runs, len(frames), args.repeats)
        print(threads, {k: round(v) for k, v in results["fps"][threads].items()}, flush=True)
    torch.set_num_threads(2)
    tables = {name: run_kde(frames, camera, engine, batch_size=batch).localizations
              for name, engine in engines.items()}
    if args.workers:
        results["workers"] = {
            name: cluster_fps(frames, camera, engine, batch, args.repeats, args.workers, name)
            for name, engine in engines.items()}
        print({name: round(w["fps"]) for name, w in results["workers"].items()}, flush=True)
    results["precision"] = compare(tables[first_name], dense_run(frames, camera, first, batch))
    results["jaccard"] = {name: evaluate(stack.truth, table, tolerance_nm=250.0)["jaccard"]
                          for name, table in tables.items()}
    if threshold is not None:
        results["jaccard"]["picasso"] = evaluate(
            stack.truth, picasso_localize(frames, camera, threshold), tolerance_nm=250.0)["jaccard"]
    text = report(results, args, os.getloadavg()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(text)


def report(results: dict, args: argparse.Namespace, load: float) -> str:
    """The Markdown summary of one run."""
    version, threshold = results["picasso"], results["picasso_threshold_adu"]
    cell = "{:.0f}".format
    rows = []
    for threads in (1, 2):
        fps = results["fps"][threads]
        picasso = fps.get("picasso")
        for name in args.weights:
            workers = results.get("workers", {}).get(name)
            rows.append(" | ".join([
                f"| `{name}`", str(threads), cell(fps[f"{name} cnn"]),
                cell(fps[f"{name} sparse"]),
                cell(workers["fps"]) if workers and threads == 1 else "-",
                cell(picasso) if picasso else "n/a",
                f"{fps[f'{name} sparse'] / picasso:.2f}" if picasso else "n/a",
                cell(results["localization_alone_fps"][name]["sparse"]) if threads == 1 else "-",
                f"{results['jaccard'][name]:.1f} |"]))
    p = results["precision"]
    dense = ", ".join(f"{results['fps'][t]['dense']:.0f} ({t} thread{'s' if t > 1 else ''})"
                      for t in (1, 2))
    alone = results["localization_alone_fps"][args.weights[0]]
    workers = next(iter(results.get("workers", {}).values()), None)
    return (
        f"# Localization at {results['molecules_per_frame']:.0f} molecules per {SIZE}x{SIZE} "
        "frame (EPFL-challenge density)\n\n"
        f"{args.frames} frames, sCMOS, uniform layout, batch {args.batch}, best of "
        f"{args.repeats}, frames/s, all runs of one row block interleaved. Load average at the "
        f"end: {load:.1f} on {os.cpu_count()} cores. Picasso: {version}"
        + (f" (gaussmle, net gradient {threshold:.0f} ADU)" if threshold else "") + ".\n\n"
        "| KDE CNN | torch threads | CNN only | CNN + localize | "
        f"{args.workers} dask workers | Picasso | CNN + localize / Picasso | localize alone "
        "(one core) | Jaccard 250 nm |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        f"Picasso's Jaccard: {results['jaccard'].get('picasso', float('nan')):.1f}. "
        f"`{args.weights[0]}` with one dense inverse per frame (the code before the "
        f"block-sparse precision): CNN + localize {dense} frames/s; localization alone "
        f"{alone['dense']:.0f} frames/s against {alone['sparse']:.0f} block-sparse (per CPU "
        f"second {alone['dense per CPU second']:.0f} and {alone['sparse per CPU second']:.0f}).\n\n"
        f"Block-sparse vs dense on the same {p['localizations']} localizations: relative "
        "difference of the reported uncertainty x: median {:.1e}, 99th percentile {:.1e}, max "
        "{:.1e}; y: median {:.1e}, 99th percentile {:.1e}, max {:.1e}. `resolved` differs for "
        "{} localizations; unresolved fraction {:.3f}; largest reported uncertainty {:.0f} nm.\n"
        .format(*(p[c][s] for c in ("uncertainty_x_nm", "uncertainty_y_nm")
                  for s in ("median", "p99", "max")), p["resolved_flag_differs"],
                p["unresolved_fraction"], p["max_uncertainty_nm"])
        + (f"\nDask workers: a local cluster of {workers['workers']} processes, one thread each "
           f"(`localize --workers`), frames/s after a cluster start of {workers['start_s']:.1f} "
           f"s; tables identical to the single process: "
           + ", ".join(f"`{n}` {w['table_equals_single_process']}"
                       for n, w in results["workers"].items()) + ".\n" if workers else "")
    )


if __name__ == "__main__":
    main()
