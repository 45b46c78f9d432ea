"""The "Dask scheduler" field of the KDE CNN and posterior widgets: with a LocalCluster's
address the job runs on its workers through the core functions of the command line and shows
what a run here shows; Cancel stops submitting and cancels the pending batches; an unreachable
scheduler is a one-line notification."""

import numpy as np
import pytest
import torch

from napari_helpers import (
    SHIPPED_DENOISER,
    add_widget,
    errors_since,
    notification_count,
    run_and_wait,
    run_reacting,
)
from napari_smlm_diffusion._napari.widgets.jobs import Progress
from napari_smlm_diffusion._napari.widgets.kde_layers import POINTS_NAME, SUM_NAME
from napari_smlm_diffusion._napari.widgets.posterior_layers import (
    MEAN_NAME,
    SAMPLES_NAME,
    STD_NAME,
    SUM_MEAN_NAME,
)
from napari_smlm_diffusion._napari.widgets.posterior_layers import POINTS_NAME as POST_POINTS

distributed = pytest.importorskip("distributed")
pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]


@pytest.fixture
def one_torch_thread():
    """The workers of a thread cluster share the process's torch threads; convolutions round
    differently with another thread count, so both runs use one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield cluster, client


def shown(viewer, names):
    return {name: np.array(viewer.layers[name].data, copy=True) for name in names}


def test_kde_widget_on_a_scheduler_shows_the_local_result(viewer, qtbot, cluster,
                                                          one_torch_thread):
    from napari_smlm_diffusion.dask_cluster import worker_model_count

    address, client = cluster[0].scheduler_address, cluster[1]
    widget = add_widget(viewer, "KDE CNN")
    run_and_wait(qtbot, widget, frames="1-6", device="cpu", batch_size=2)
    assert widget.status.value.startswith("Done: 6 frames"), widget.status.value
    here = shown(viewer, (SUM_NAME, POINTS_NAME))
    assert len(here[POINTS_NAME]) > 10
    with distributed.get_task_stream(client) as tasks:
        run_and_wait(qtbot, widget, scheduler=address)
    assert widget.status.value.startswith("Done: 6 frames"), widget.status.value
    assert f"on the dask cluster at {address}" in widget.status.value
    there = shown(viewer, (SUM_NAME, POINTS_NAME))
    np.testing.assert_array_equal(there[POINTS_NAME], here[POINTS_NAME])
    np.testing.assert_array_equal(there[SUM_NAME], here[SUM_NAME])
    assert len([t for t in tasks.data if t["key"].startswith("run_kde_batch")]) == 3
    assert 1 <= sum(client.run(worker_model_count).values()) <= 2


def test_cancel_on_a_scheduler_stops_submitting(viewer, qtbot, cluster):
    address, client = cluster[0].scheduler_address, cluster[1]
    widget = add_widget(viewer, "KDE CNN")
    for name, value in dict(frames="1-100", device="cpu", batch_size=1,
                            scheduler=address).items():
        getattr(widget, name).value = value
    seen = []

    def cancel_on_first_batch(message):
        if isinstance(message, Progress) and message.done:
            seen.append(message.done)
            widget.stop()

    with distributed.get_task_stream(client) as tasks:
        run_reacting(qtbot, widget, cancel_on_first_batch)
    assert widget.status.value.startswith("Cancelled after"), widget.status.value
    assert SUM_NAME not in viewer.layers and widget.run.enabled
    qtbot.waitUntil(lambda: not cluster[0].scheduler.tasks, timeout=10_000)  # none left
    assert len([t for t in tasks.data if t["key"].startswith("run_kde_batch")]) < 20


def test_posterior_widget_on_a_scheduler_shows_the_local_result(viewer, qtbot, cluster,
                                                                one_torch_thread):
    address = cluster[0].scheduler_address
    widget = add_widget(viewer, "Diffusion posterior")
    widget.weights.value = SHIPPED_DENOISER
    names = (MEAN_NAME, STD_NAME, SAMPLES_NAME, SUM_MEAN_NAME, POST_POINTS)
    run_and_wait(qtbot, widget, frames="2-4", samples=2, steps=2, keep=1, device="cpu")
    assert widget.status.value.startswith("Done: 3 frames"), widget.status.value
    here = shown(viewer, names)
    run_and_wait(qtbot, widget, scheduler=address)
    assert widget.status.value.startswith("Done: 3 frames"), widget.status.value
    assert f"on the dask cluster at {address}" in widget.status.value
    there = shown(viewer, names)
    assert len(here[POST_POINTS]) > 0
    for name in names:  # identical up to float rounding
        np.testing.assert_allclose(there[name], here[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("title", ["KDE CNN", "Diffusion posterior"])
def test_an_unreachable_scheduler_is_a_one_line_notification(viewer, qtbot, monkeypatch,
                                                             title):
    from napari_smlm_diffusion import dask_cluster

    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT", "2s")
    widget = add_widget(viewer, title)
    assert "dask" in widget.scheduler.tooltip and widget.scheduler.value == ""
    before = notification_count()
    run_and_wait(qtbot, widget, frames="1-2", device="cpu", scheduler="tcp://127.0.0.1:9")
    errors = errors_since(before)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'" in errors[0]
    assert widget.run.enabled and widget.worker is None
