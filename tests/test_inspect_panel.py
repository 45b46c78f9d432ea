"""Issue 15, GUI: "Inspect data" in Camera & PSF runs in a worker, shows the estimates next to the
layer's camera with the warnings (notifications, marked fields), and applies nothing until
"Accept"."""

import dataclasses

import numpy as np
import pytest

from napari_helpers import TIMEOUT_MS, notices_since, notification_count
from napari_smlm_diffusion._napari.widgets.camera_widget import CameraWidget
from napari_smlm_diffusion._napari.widgets.inspect_panel import INSPECTION_KEY, MARK_STYLE
from napari_smlm_diffusion._napari.widgets.layer_camera import CAMERA_KEY
from napari_smlm_diffusion.camera import PRESETS
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_frames

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]
SCMOS = PRESETS["sCMOS"]  # baseline 100 ADU, 0.46 e-/ADU, 100 nm pixels
TRUE_PSF_NM = 120.0


@pytest.fixture(scope="module")
def frames():
    config = SimulationConfig(size=(48, 48), density=0.3, photons=(1000.0, 5000.0),
                              background=(20.0, 200.0), camera=SCMOS,
                              psf_sigma_px=TRUE_PSF_NM / SCMOS.pixel_size)
    return np.stack([f.adu for f in simulate_frames(100, config, seed=11, with_kde=False)])


@pytest.fixture
def widget(make_napari_viewer, frames):
    viewer = make_napari_viewer()
    wrong = dataclasses.replace(SCMOS, sensitivity=2.0)  # 4.3x off
    viewer.add_image(frames, name="movie", metadata={"camera": wrong.to_dict(),
                                                     "psf_sigma_nm": 300.0})
    return viewer, CameraWidget(viewer)


def inspect(qtbot, panel):
    panel.start()
    assert panel.worker is not None  # runs in a worker thread
    qtbot.waitUntil(lambda: panel.worker is None, timeout=TIMEOUT_MS)


def test_inspect_shows_estimates_and_warnings_and_applies_only_on_accept(qtbot, widget):
    viewer, camera = widget
    layer, panel = viewer.layers["movie"], camera.inspection
    before = dict(layer.metadata[CAMERA_KEY]["values"])
    count = notification_count()
    inspect(qtbot, panel)
    report = panel.report
    assert report is not None and layer.metadata[INSPECTION_KEY]["n_frames"] == 100
    assert report.sensitivity_e_per_adu == pytest.approx(0.46, rel=0.2)
    assert report.psf_sigma_nm == pytest.approx(TRUE_PSF_NM, rel=0.15)
    table = panel.table.value
    for label in ("Baseline (ADU)", "Sensitivity (e-/ADU)", "PSF sigma (nm)",
                  "Photons per spot", "Background (photons/px)", "Density"):
        assert label in table
    assert "! Sensitivity" in table and "! PSF sigma" in table and "! Baseline" not in table
    # the warnings: notifications, the message, marked fields
    warnings = [n for n in notices_since(count) if n.startswith("Inspect data:")]
    assert any("camera sensitivity 2" in w for w in warnings)
    assert any("PSF sigma 300 nm differs" in w for w in warnings)
    assert "camera sensitivity 2" in panel.message.value
    assert camera.fields["sensitivity"].native.styleSheet() == MARK_STYLE
    assert camera.fields["sensitivity"].label.startswith("!")
    assert camera.fields["psf_sigma_nm"].native.styleSheet() == MARK_STYLE
    assert camera.fields["baseline"].native.styleSheet() == ""
    assert layer.metadata[CAMERA_KEY]["values"] == before  # nothing applied yet

    panel.accept.changed.emit(True)
    values = layer.metadata[CAMERA_KEY]["values"]
    assert values["sensitivity"] == round(report.sensitivity_e_per_adu, 3)
    assert values["baseline"] == round(report.baseline_adu, 1)
    assert values["psf_sigma_nm"] == round(report.psf_sigma_nm, 1)
    assert values["read_noise"] == (round(report.read_noise_e, 2) if report.read_noise_from_data
                                    else before["read_noise"])
    assert values["pixel_size"] == before["pixel_size"]
    assert "accepted from the inspection" in layer.metadata[CAMERA_KEY]["source"]
    assert camera.fields["sensitivity"].value == pytest.approx(values["sensitivity"], abs=1e-3)
    # the values now agree with the data: no warning, no mark
    assert panel.warnings == [] and "agree with the data" in panel.message.value
    assert all(field.native.styleSheet() == "" for field in camera.fields.values())
    # inspected again with the accepted sensitivity, the baseline is right too (it uses the
    # given read noise when the data cannot measure it)
    inspect(qtbot, panel)
    assert panel.report.baseline_adu == pytest.approx(SCMOS.baseline, abs=2.0)


def test_cancel_discards_the_inspection(qtbot, widget):
    viewer, camera = widget
    panel = camera.inspection
    before = dict(viewer.layers["movie"].metadata[CAMERA_KEY]["values"])
    panel.start()
    panel.stop()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=TIMEOUT_MS)
    assert panel.report is None and not panel.accept.enabled
    assert "cancelled" in panel.message.value.lower()
    assert INSPECTION_KEY not in viewer.layers["movie"].metadata
    assert viewer.layers["movie"].metadata[CAMERA_KEY]["values"] == before


def test_a_stack_that_cannot_be_inspected_is_a_one_line_error(qtbot, widget, frames):
    viewer, camera = widget
    viewer.add_image(frames[:5], name="short")
    camera.layer.value = viewer.layers["short"]
    inspect(qtbot, camera.inspection)
    message = camera.inspection.message.value
    assert "the stack has 5 frames" in message and "\n" not in message
    assert camera.inspection.report is None and not camera.inspection.accept.enabled
