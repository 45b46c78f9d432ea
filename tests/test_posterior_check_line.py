"""Issue 14, GUI: after a posterior run the widget shows the label-free check of the reported
uncertainties in one line (or says that too few molecules were found again)."""

import numpy as np
import pandas as pd
import pytest

from napari_helpers import RAW, SHIPPED_DENOISER, add_widget, run_and_wait
from napari_smlm_diffusion._napari.widgets.posterior_job import uncertainty_line
from napari_smlm_diffusion._napari.widgets.posterior_layers import POINTS_NAME


def blinking_pairs(n=300, scale=1.0, seed=0):
    """Molecules on in frames f and f + 1, localized with Gaussian errors ``scale`` x the
    reported sigma; molecules 1 um apart so that pairs are unambiguous."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(5.0, 30.0, (n, 2))
    sites = np.column_stack([np.arange(n) % 20, np.arange(n) // 20]) * 1000.0
    rows = []
    for f in (0, 1):
        xy = sites + rng.normal(0.0, scale * sigma)
        rows.append(pd.DataFrame({"frame": 2 * (np.arange(n) % 5) + f, "x_nm": xy[:, 0],
                                  "y_nm": xy[:, 1], "uncertainty_x_nm": sigma[:, 0],
                                  "uncertainty_y_nm": sigma[:, 1]}))
    return pd.concat(rows, ignore_index=True)


def test_the_line_reads_right_and_over_confident_uncertainties():
    assert "uncertainties match the observed scatter" in uncertainty_line(blinking_pairs())
    line = uncertainty_line(blinking_pairs(scale=2.0))
    spread = float(line.split("spread ")[1].split(" ")[0])
    assert "x too small" in line and spread == pytest.approx(2.0, rel=0.1)
    assert "\n" not in line


def test_independent_frames_are_said_in_plain_words():
    # every frame a fresh set of molecules in the same 5 x 5 um (3.2 per um^2): no molecule
    # stays on, so the line says why there is no check instead of "not enough molecules"
    rng = np.random.default_rng(3)
    table = pd.concat([pd.DataFrame({"frame": f, "x_nm": rng.uniform(0, 5000, 80),
                                     "y_nm": rng.uniform(0, 5000, 80), "uncertainty_nm": 20.0})
                       for f in range(40)], ignore_index=True)
    line = uncertainty_line(table)
    assert line.startswith("Label-free check: the molecules do not seem to stay on")
    assert "blinking" in line and "\n" not in line


def test_too_few_pairs_is_said_in_plain_words():
    table = blinking_pairs(n=10)
    assert uncertainty_line(table) == ("Label-free check: not enough molecules found again in "
                                       "consecutive frames (run more consecutive frames).")
    single = table[table.frame == 0]
    assert "not enough molecules" in uncertainty_line(single)


@pytest.mark.gui
@pytest.mark.usefixtures("isolated_settings")
def test_posterior_widget_shows_the_check_after_a_run(viewer, qtbot, tmp_path):
    widget = add_widget(viewer, "Diffusion posterior")
    widget.weights.value = SHIPPED_DENOISER
    run_and_wait(qtbot, widget, frames="1-4", samples=3, steps=3, keep=0, device="cpu")
    lines = widget.status.value.split("\n")
    assert lines[0].startswith("Done: 4 frames"), widget.status.value
    assert lines[-1] == uncertainty_line(viewer.layers[POINTS_NAME].features)
    assert viewer.layers[RAW] is not None
