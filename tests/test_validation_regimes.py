"""The simulated validation regimes the calibration and the benchmarks run on."""

import numpy as np
import pytest

from napari_smlm_diffusion.calibration.validation_runs import (
    CALIBRATION_SEED,
    calibration_regimes,
    regime_stack,
)
from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS


def test_a_selection_of_microscopes_draws_the_frames_of_the_full_run():
    everything = {r.name: r for r in calibration_regimes(
        32, microscopes=["release", *MICROSCOPE_CORNERS, "release-blinking"])}
    default = calibration_regimes(32)
    assert [r.index for r in default] == list(range(len(default)))
    assert "release-blinking d1" not in {r.name for r in default}
    chosen = calibration_regimes(32, microscopes=["release-blinking", "dim/65nm/psf1.9"])
    assert [r.name for r in chosen][:3] == ["release-blinking d0.3", "release-blinking d1",
                                           "release-blinking d3"]
    assert len({r.index for r in everything.values()}) == len(everything)
    for regime in chosen:
        full = everything[regime.name]
        assert regime.index == full.index
        np.testing.assert_array_equal(
            regime_stack(regime.config, 2, CALIBRATION_SEED + regime.index).frames,
            regime_stack(full.config, 2, CALIBRATION_SEED + full.index).frames)


def test_release_blinking_keeps_molecules_on_across_frames_where_release_does_not():
    regimes = {r.name: r for r in calibration_regimes(32, [3.0], ["release", "release-blinking"])}
    blinking = regime_stack(regimes["release-blinking d3"].config, 4, 1).truth
    fresh = regime_stack(regimes["release d3"].config, 4, 1).truth
    assert "emitter" in blinking and "emitter" not in fresh
    on_in_next_frame = blinking.groupby("emitter").frame.apply(lambda f: np.any(np.diff(
        np.sort(f.to_numpy())) == 1))
    assert on_in_next_frame.mean() > 0.3
    assert regimes["release-blinking d3"].config.camera == regimes["release d3"].config.camera


def test_unknown_microscope_names_the_known_ones():
    with pytest.raises(ValueError, match="release-blinking"):
        calibration_regimes(32, microscopes=["relase"])
