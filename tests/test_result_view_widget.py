"""Issue 16 item 1: after a run the viewer shows the result (frame, stacking, visibility,
contrast from percentiles) and the summed posterior layers are there."""

import numpy as np
import pytest

from napari_helpers import RAW, SHIPPED_DENOISER, add_widget, run_and_wait
from napari_smlm_diffusion._napari.widgets.kde_layers import KDE_NAME, POINTS_NAME, SUM_NAME
from napari_smlm_diffusion._napari.widgets.outputs import contrast
from napari_smlm_diffusion._napari.widgets.posterior_layers import (
    MEAN_NAME,
    STD_NAME,
    SUM_MEAN_NAME,
    SUM_STD_NAME,
)
from napari_smlm_diffusion._napari.widgets.posterior_layers import (
    POINTS_NAME as POSTERIOR_POINTS,
)

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]


def current_frame(viewer):
    return int(round(viewer.dims.point[viewer.dims.ndim - 3]))


def test_contrast_puts_a_raised_background_below_the_lower_limit():
    rng = np.random.default_rng(0)
    image = np.full((200, 200), 0.02, np.float32)  # a background slightly above zero
    image[rng.integers(0, 200, 300), rng.integers(0, 200, 300)] = rng.uniform(1, 5, 300)
    low, high = contrast(image)
    assert low > 0.02 and 1.0 <= low < 1.2 and 4.9 < high <= 5.0
    assert contrast(np.zeros((4, 4))) == pytest.approx([0.0, 1e-6])


def test_kde_run_moves_to_its_frames_and_puts_results_on_top(viewer, qtbot, untrained_weights):
    viewer.dims.set_point(0, 49)
    viewer.layers[RAW].visible = True
    widget = add_widget(viewer, "KDE CNN")
    run_and_wait(qtbot, widget, frames="3-4", device="cpu", weights=untrained_weights,
                 keep_kdes=True)
    assert widget.status.value.startswith("Done"), widget.status.value
    assert current_frame(viewer) == 2
    names = [layer.name for layer in viewer.layers]
    assert names[-2:] == [SUM_NAME, POINTS_NAME] and names[-3] == KDE_NAME
    assert viewer.layers[SUM_NAME].visible and not viewer.layers[KDE_NAME].visible
    total = viewer.layers[SUM_NAME]
    assert total.contrast_limits[0] > np.median(total.data)  # background drawn black

    viewer.layers[SUM_NAME].visible = False  # hidden by the user; the next run shows it again
    viewer.dims.set_point(0, 80)
    run_and_wait(qtbot, widget, frames="7")
    assert current_frame(viewer) == 6 and viewer.layers[SUM_NAME].visible


def test_posterior_run_shows_mean_on_top_std_and_sums_hidden_below(viewer, qtbot, tmp_path):
    viewer.dims.set_point(0, 49)
    widget = add_widget(viewer, "Diffusion posterior")
    run_and_wait(qtbot, widget, frames="4-5", samples=2, steps=2, keep=0, device="cpu",
                 weights=SHIPPED_DENOISER)
    assert widget.status.value.startswith("Done"), widget.status.value
    assert current_frame(viewer) == 3
    names = [layer.name for layer in viewer.layers]
    assert names[-1] == POSTERIOR_POINTS and names[-2] == MEAN_NAME
    assert names.index(STD_NAME) < names.index(MEAN_NAME)  # std below the mean...
    for name in (STD_NAME, SUM_MEAN_NAME, SUM_STD_NAME):  # ...and hidden, as the sums
        assert not viewer.layers[name].visible, name
    mean = viewer.layers[MEAN_NAME]
    assert mean.visible and viewer.layers.selection.active.name == POSTERIOR_POINTS
    np.testing.assert_allclose(viewer.layers[SUM_MEAN_NAME].data, mean.data.sum(0), rtol=1e-5,
                               atol=1e-5)
    # the frame shown holds the result: its mean has signal above its lower contrast limit
    assert (mean.data[0] > mean.contrast_limits[0]).sum() > 0
