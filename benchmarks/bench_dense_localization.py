"""Localization at EPFL-challenge density: block-sparse vs dense precision, and Picasso.

Simulates 64x64 sCMOS frames with ~140 molecules each (uniform layout), runs the shipped KDE CNN
and the default localization (peaks, photometry, precision), and times, interleaved in one run:
the CNN alone, CNN + localization with the precision taken per cluster of overlapping emitters
(block-sparse, the package default) and with one dense inverse per frame (the previous code), on
1 and 2 torch threads (1 thread: the localization runs beside the network on the other core),
the localization alone on precomputed KDEs (block-sparse and dense), and Picasso (net gradient
+ ``gaussmle``, threshold chosen for the best Jaccard index on the first frames) when it can be
imported, and CNN + localization on a local dask cluster of ``--workers`` processes. Also
compares the two precisions on the same frames (relative
difference of the reported per-axis uncertainties) and counts the unresolved localizations.

    python benchmarks/bench_dense_localization.py [--frames 128] [--repeats 3] [--workers 2]
        [--weights kde_cnn|PATH.safetensors] [--out benchmarks/results/dense_localization.md]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2,
                        help="also time a local dask cluster of this many processes (0: no)")
    parser.add_argument("--weights", default=KDE_CNN_NAME,
                        help="KDE CNN: a shipped model's name or a .safetensors file with its card")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/dense_localization.md"))
    args = parser.parse_args()
    camera = preset("sCMOS")
    area_um2 = (SIZE * camera.pixel_size / 1000.0) ** 2
    config = SimulationConfig(size=(SIZE, SIZE), density=MOLECULES_PER_FRAME / area_um2)
    stack = simulate_stack(args.frames, config, seed=180_000)
    frames, batch = stack.frames, args.batch
    engine = KdeEngine.load(args.weights, device="cpu")
    version = picasso_version()
    threshold = None
    if version != "not installed":
        threshold, _ = best_threshold(frames[:16], stack.truth[stack.truth.frame < 16], camera)
    kdes = engine.predict(frames, camera)
    photons, indices = camera.adu_to_photons(frames), np.arange(len(frames))
    sigma_nm = DEFAULT_PSF_SIGMA_PX * camera.pixel_size  # as run_kde uses by default

    def localize_only() -> pd.DataFrame:
        return localizations_from_kdes(kdes, photons, indices, camera, sigma_nm,
                                       engine.threshold_for(DEFAULT_PSF_SIGMA_PX),
                                       engine.upsampling)

    def localize_only_dense() -> pd.DataFrame:
        with dense_precision():
            return localize_only()

    alone = best_fps({"sparse": localize_only, "dense": localize_only_dense}, len(frames),
                     args.repeats)
    alone |= {f"{k} per CPU second": cpu_fps(run, len(frames), args.repeats)
              for k, run in (("sparse", localize_only), ("dense", localize_only_dense))}
    print(f"localization alone (one core): block-sparse {alone['sparse']:.0f}, dense "
          f"{alone['dense']:.0f} frames/s; per CPU second {alone['sparse per CPU second']:.0f} "
          f"and {alone['dense per CPU second']:.0f}", flush=True)
    rows, results = [], {"frames": args.frames,
                         "molecules_per_frame": float(len(stack.truth) / args.frames),
                         "picasso": version, "picasso_threshold_adu": threshold,
                         "localization_alone_fps": alone, "fps": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs = {
            "cnn": lambda: [engine.predict(frames[i:i + batch], camera)
                            for i in range(0, len(frames), batch)],
            "sparse": lambda: run_kde(frames, camera, engine, batch_size=batch),
            "dense": lambda: dense_run(frames, camera, engine, batch),
        }
        if threshold is not None:
            runs["picasso"] = lambda: picasso_localize(frames, camera, threshold)
        fps = best_fps(runs, len(frames), args.repeats)
        results["fps"][threads] = fps
        cells = [f"{fps[k]:.0f}" for k in ("cnn", "sparse", "dense")]
        cells.append(f"{fps['picasso']:.0f}" if "picasso" in fps else "n/a")
        ratio = f"{fps['sparse'] / fps['picasso']:.2f}" if "picasso" in fps else "n/a"
        rows.append(f"| {threads} | " + " | ".join(cells) + f" | {ratio} |")
        print(rows[-1], flush=True)
    torch.set_num_threads(2)
    sparse = run_kde(frames, camera, engine, batch_size=batch).localizations
    if args.workers:
        workers = cluster_fps(frames, camera, engine, batch, args.repeats, args.workers,
                              args.weights)
        results["workers"] = workers
        print(f"{args.workers} worker processes: {workers['fps']:.0f} frames/s (cluster start "
              f"{workers['start_s']:.1f} s, not included)", flush=True)
    dense = dense_run(frames, camera, engine, batch)
    results["precision"] = compare(sparse, dense)
    ours = evaluate(stack.truth, sparse, tolerance_nm=250.0)
    results["jaccard"] = {"ours": ours["jaccard"]}
    if threshold is not None:
        theirs = evaluate(stack.truth, picasso_localize(frames, camera, threshold),
                          tolerance_nm=250.0)
        results["jaccard"]["picasso"] = theirs["jaccard"]
    p = results["precision"]
    text = (
        f"# Localization at {results['molecules_per_frame']:.0f} molecules per {SIZE}x{SIZE} "
        "frame (EPFL-challenge density)\n\n"
        f"KDE CNN `{args.weights}`. {args.frames} frames, sCMOS, uniform layout, batch {batch}, "
        f"best of {args.repeats}, "
        f"frames/s. Localization alone (KDEs precomputed, one core): block-sparse "
        f"{alone['sparse']:.0f}, dense {alone['dense']:.0f} frames/s (per CPU second: "
        f"{alone['sparse per CPU second']:.0f} and {alone['dense per CPU second']:.0f}). "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. "
        f"Picasso: {version}"
        + (f" (gaussmle, net gradient {threshold:.0f} ADU)" if threshold else "") + ".\n\n"
        "| torch threads | CNN only | CNN + localize (block-sparse) | CNN + localize (dense) "
        "| Picasso | block-sparse / Picasso |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        f"Block-sparse vs dense on the same {p['localizations']} localizations: relative "
        "difference of the reported uncertainty x: median {:.1e}, 99th percentile {:.1e}, max "
        "{:.1e}; y: median {:.1e}, 99th percentile {:.1e}, max {:.1e}. `resolved` differs for "
        "{} localizations; unresolved fraction {:.3f}; largest reported uncertainty {:.0f} nm.\n"
        .format(*(p[c][s] for c in ("uncertainty_x_nm", "uncertainty_y_nm")
                  for s in ("median", "p99", "max")), p["resolved_flag_differs"],
                p["unresolved_fraction"], p["max_uncertainty_nm"])
        + (f"\nOn a local dask cluster ({results['workers']['workers']} processes, one "
           "thread each, `localize --workers`): "
           f"{results['workers']['fps']:.0f} frames/s after a cluster start of "
           f"{results['workers']['start_s']:.1f} s; table identical to the single process: "
           f"{results['workers']['table_equals_single_process']}.\n" if "workers" in results
           else "")
        + "\nJaccard (250 nm): " + ", ".join(f"{k} {v:.3f}" for k, v in
                                           results["jaccard"].items()) + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
