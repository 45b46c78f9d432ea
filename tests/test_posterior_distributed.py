"""The posterior on a 2-worker dask LocalCluster: networks loaded once per worker, results in
frame order, outputs equal to a single-process run (to float rounding)."""

import threading

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from card_helpers import denoiser_card
from napari_smlm_diffusion import posterior_sampling
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.io import read_localizations
from napari_smlm_diffusion.models.denoiser import ConditionalDenoiser
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
from napari_smlm_diffusion.posterior_outputs import publish_posterior, stream_posterior
from napari_smlm_diffusion.pretrained import save_weights
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

distributed = pytest.importorskip("distributed")

OUTPUTS = ["localizations.csv", "mean.tif", "samples.tif", "std.tif", "sum_mean.tif",
           "sum_std.tif"]


@pytest.fixture
def one_torch_thread():
    """Workers of a thread cluster share the process's torch threads; convolutions round
    differently with another thread count, so the comparison runs with one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_two_workers_give_the_single_process_outputs(untrained_weights, tmp_path, monkeypatch,
                                                     one_torch_thread):
    from napari_smlm_diffusion.dask_cluster import worker_model_count
    from napari_smlm_diffusion.posterior_distributed import EngineSpec, distributed_source

    torch.manual_seed(0)
    denoiser = ConditionalDenoiser(channels=(8, 8, 8), embed_dim=8)
    for parameter in denoiser.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    weights = tmp_path / "den.safetensors"
    save_weights(denoiser, weights, denoiser_card(denoiser.config, untrained_weights,
                                                  detection_threshold=0.05))
    monkeypatch.setitem(posterior_sampling.BLOCK_SAMPLE_PIXELS, "cpu", 2 * 2 * 32 * 32)
    stack = simulate_stack(7, SimulationConfig(size=(32, 32), density=3.0), seed=8).frames
    settings = PosteriorSettings(samples=2, steps=2, seed=3, keep_samples=1)
    camera = preset("sCMOS")
    engine = PosteriorEngine.load(str(untrained_weights), str(weights), "cpu")

    def run(out, source=None):
        out.mkdir()
        stream_posterior(stack, camera, engine, range(7), settings, out, {}, 150.0,
                         source=source)
        publish_posterior(out, {}, {}, 40.0)

    run(tmp_path / "single")
    loads = []
    load = PosteriorEngine.load.__func__
    monkeypatch.setattr(PosteriorEngine, "load", classmethod(
        lambda cls, *args: loads.append(threading.current_thread().name) or load(cls, *args)))
    spec = EngineSpec(str(untrained_weights), str(weights), "cpu")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            run(tmp_path / "cluster", distributed_source(client, spec, stack, camera,
                                                         settings, 150.0))
        ran_on = client.run(worker_model_count)
    blocks = [task for task in tasks.data if task["key"].startswith("run_block")]
    assert len(blocks) == 4  # frames 0-1, 2-3, 4-5, 6
    assert 1 <= len(loads) == sum(ran_on.values()) <= 2  # once per worker that ran blocks
    assert set(ran_on.values()) <= {0, 1}
    # Identical up to float rounding: BLAS and torch may split sums differently across threads.
    single = read_localizations(tmp_path / "single" / "localizations.csv")
    cluster = read_localizations(tmp_path / "cluster" / "localizations.csv")
    pd.testing.assert_frame_equal(single, cluster, rtol=1e-6, atol=1e-9)
    for name in OUTPUTS[1:]:
        np.testing.assert_allclose(tifffile.imread(tmp_path / "cluster" / name),
                                   tifffile.imread(tmp_path / "single" / name),
                                   rtol=1e-5, atol=1e-7, err_msg=name)
    # drift-corrected sums (posterior --drift) are made when publishing: the same from both
    curve = np.column_stack([np.linspace(0, 90, 7), np.linspace(0, 30, 7)])
    for name in ("single", "cluster"):
        publish_posterior(tmp_path / name, {}, {}, 40.0, (curve, "curve.csv"))
    for name in ("sum_mean.tif", "sum_std.tif"):
        np.testing.assert_allclose(tifffile.imread(tmp_path / "cluster" / name),
                                   tifffile.imread(tmp_path / "single" / name),
                                   rtol=1e-5, atol=1e-7, err_msg=name)


def test_workers_and_scheduler_exclude_each_other(tmp_path, capsys):
    from napari_smlm_diffusion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["posterior", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out"), "--workers",
              "2", "--scheduler", "tcp://127.0.0.1:8786"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
