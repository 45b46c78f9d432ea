"""Issue 15, GUI: when a KDE or posterior job starts, the settings are checked on up to 50 of its
frames; each warning is a napari notification (warning level) and a line of the widget's status;
a job that found nothing although the frames have clear spots says so."""

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_helpers import RAW, add_widget, notification_count, run_and_wait
from napari_smlm_diffusion._napari.widgets.jobs import data_warnings, found_nothing
from napari_smlm_diffusion._napari.widgets.layer_camera import set_layer_camera
from napari_smlm_diffusion._napari.widgets.settings import get_settings
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.inspection import job_sample
from napari_smlm_diffusion.inspection.checks import JOB_SAMPLE_FRAMES
from napari_smlm_diffusion.pipeline import KdeEngine

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]


def warnings_since(count):
    return [str(n.message) for n in notification_manager.records[count:]
            if n.severity == "warning"]


def test_kde_job_warns_on_implausible_psf_and_on_nothing_found(viewer, qtbot, untrained_weights):
    raw = viewer.layers[RAW]
    set_layer_camera(raw, {"psf_sigma_nm": 30.0}, "typed", get_settings())  # 0.3 px
    widget = add_widget(viewer, "KDE CNN")
    widget.weights.value = untrained_weights  # finds nothing on the sample data
    count = notification_count()
    run_and_wait(qtbot, widget, frames="1-20", device="cpu")
    warnings = warnings_since(count)
    assert any(w.startswith("KDE CNN: PSF sigma 30 nm is 0.3 camera pixels") for w in warnings)
    assert any("KDE CNN: no molecule found although" in w for w in warnings)
    status = widget.status.value
    assert status.startswith("Done: 20 frames") and "0 localizations" in status
    assert "Warning: PSF sigma 30 nm" in status and "Warning: no molecule found" in status
    # a new run starts with a clean slate: right PSF, no stale warning
    set_layer_camera(raw, {"psf_sigma_nm": 120.0}, "typed", get_settings())
    count = notification_count()
    run_and_wait(qtbot, widget, frames="1-20", device="cpu")
    assert not any("PSF sigma" in w for w in warnings_since(count))
    assert "PSF sigma" not in widget.status.value


def test_the_checks_look_at_frames_spread_over_the_job(viewer, untrained_weights):
    stack = viewer.layers[RAW].data
    sample = job_sample(stack, range(10, 100))
    assert len(sample) == JOB_SAMPLE_FRAMES
    np.testing.assert_array_equal(sample[0], stack[10])
    np.testing.assert_array_equal(sample[-1], stack[99])
    card = KdeEngine.load(str(untrained_weights), "cpu").card
    checks = data_warnings(stack, range(0, 5), preset("sCMOS"), 120.0, card)
    assert [n.text for n in checks] == []  # the sample's own camera: nothing to say
    assert [n.text for n in found_nothing(stack[:5], 3)] == []  # something was found
