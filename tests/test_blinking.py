"""Simulator physics against theory: blinking kinetics, sCMOS pixel maps, stage drift."""

import math

import numpy as np
import pytest

from napari_smlm_diffusion.blinking import Blinking, BlinkingTrajectories
from napari_smlm_diffusion.camera import Camera
from napari_smlm_diffusion.simulate import (
    SimulationConfig,
    drift_trajectory,
    simulate_stack,
)


def on_fractions(kinetics: Blinking, n: int, frames: int, seed: int = 0) -> np.ndarray:
    trajectories = BlinkingTrajectories(n, kinetics, np.random.default_rng(seed))
    return np.stack([trajectories.next_frame() for _ in range(frames)], axis=1)


def runs_of_frames(on: np.ndarray) -> list[int]:
    """Lengths of runs of consecutive frames with some on-time, over all fluorophores."""
    lengths = []
    for row in on > 0:
        padded = np.concatenate([[False], row, [False]])
        edges = np.flatnonzero(np.diff(padded.astype(int)))
        lengths.extend(edges[1::2] - edges[::2])
    return lengths


def test_duty_cycle_is_on_over_on_plus_off():
    kinetics = Blinking(on_time=4.0, off_time=36.0)
    fractions = on_fractions(kinetics, 2000, 400)
    assert kinetics.duty_cycle == pytest.approx(0.1)
    assert fractions.mean() == pytest.approx(0.1, rel=0.03)
    assert fractions.min() >= 0 and fractions.max() <= 1


@pytest.mark.parametrize("on_time", [0.5, 3.0, 8.0])
def test_an_event_is_seen_in_on_time_plus_one_frames(on_time):
    """An exponential on-event of mean L starting at a uniform phase touches L + 1 frames on
    average; with rare events, runs of visible frames are single events."""
    kinetics = Blinking(on_time=on_time, off_time=2000.0)
    runs = runs_of_frames(on_fractions(kinetics, 3000, 600, seed=1))
    assert len(runs) > 500
    assert np.mean(runs) == pytest.approx(on_time + 1, rel=0.06)


def test_on_time_per_event_is_exponential_with_the_mean_on_time():
    kinetics = Blinking(on_time=2.5, off_time=2000.0)
    fractions = on_fractions(kinetics, 3000, 600, seed=2)
    # Sum over the frames of one event = its duration (runs separated by >= 1 dark frame).
    totals = [sum(row[start:stop]) for row in fractions
              for start, stop in _runs(row)]
    assert np.mean(totals) == pytest.approx(2.5, rel=0.06)


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], row > 0, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(int)))
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_bleaching_after_geometric_number_of_events():
    """Each on-event ends in bleaching with probability 1/cycles: mean events = cycles, and the
    surviving fraction decays as the chain predicts."""
    kinetics = Blinking(on_time=1.0, off_time=20.0, bleach_cycles=4.0)
    n = 4000
    trajectories = BlinkingTrajectories(n, kinetics, np.random.default_rng(3))
    trajectories.on[:] = False  # start all dark and unbleached, as after pumping
    trajectories.next_switch = trajectories.rng.exponential(kinetics.off_time, n)
    fractions = np.stack([trajectories.next_frame() for _ in range(2500)], axis=1)
    assert not trajectories.alive.any()
    events = np.array([len(_runs(row)) for row in fractions])
    # Events separated by < 1 dark frame merge into one run; with off 20x on that is rare (~5 %).
    assert events.mean() == pytest.approx(4.0, rel=0.08)
    assert np.mean(events == 1) == pytest.approx(0.25 * 1.05, abs=0.04)


def test_kinetics_are_validated():
    with pytest.raises(ValueError, match="on_time"):
        Blinking(on_time=0)
    with pytest.raises(ValueError, match="bleach_cycles"):
        Blinking(bleach_cycles=0.5)
    assert Blinking().bleach_probability == 0.0 and math.isinf(Blinking().bleach_cycles)


def test_blinking_stack_keeps_emitters_in_place_and_density_on_average():
    config = SimulationConfig(size=(48, 48), density=2.0, photons=(1000.0, 2000.0),
                              background=20.0, layout="uniform",
                              blinking=Blinking(on_time=3.0, off_time=57.0))
    frames = 600
    truth = simulate_stack(frames, config, seed=5).truth
    # An event of mean on-time L is seen in L + 1 frames: (L + 1) / (on + off) of the frames.
    labels_seen = truth["emitter"].nunique()  # all of them: each is seen every ~60 frames
    assert len(truth) / frames / labels_seen == pytest.approx(4 / 60, rel=0.05)
    area_um2 = (48 * 0.1) ** 2
    assert len(truth) / frames / area_um2 == pytest.approx(2.0 * 4 / 3, rel=0.12)
    positions = truth.groupby("emitter")[["x_nm", "y_nm"]].std().fillna(0.0)
    assert positions.to_numpy().max() < 1e-9  # a fluorophore never moves without drift
    full = truth.groupby("emitter")["photons"].max()
    assert full.between(1000 * 0.4, 2000 * 2.5).mean() > 0.95


def test_scmos_pixel_maps_set_offset_and_variance_per_pixel():
    camera = Camera(baseline=100.0, sensitivity=0.5, read_noise=2.0, pixel_size=100.0)
    config = SimulationConfig(size=(24, 24), density=0.0, background=0.0, camera=camera,
                              offset_spread_adu=3.0, read_noise_spread=0.4)
    stack = simulate_stack(800, config, seed=5)
    maps = stack.pixel_maps
    frames = stack.frames.astype(float)
    expected_var = (maps.read_noise_e / camera.sensitivity) ** 2 + 1 / 12  # + ADU rounding
    z = (frames.mean(axis=0) - maps.offset_adu) / np.sqrt(expected_var / len(frames))
    assert np.abs(z).max() < 4.5
    ratio = frames.var(axis=0) / expected_var
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)
    assert np.std(np.log(maps.read_noise_e)) == pytest.approx(0.4, rel=0.15)
    assert np.std(maps.offset_adu) == pytest.approx(3.0, rel=0.15)


def test_drift_is_smooth_starts_at_zero_and_reaches_its_excursion():
    drift = drift_trajectory(5000, 300.0, np.random.default_rng(6))
    assert drift.shape == (5000, 2)
    np.testing.assert_array_equal(drift[0], 0.0)
    assert np.max(np.hypot(*drift.T)) == pytest.approx(300.0)
    assert np.max(np.abs(np.diff(drift, axis=0))) < 1.0  # nm per frame: smooth


def test_drifted_stack_records_the_shift_of_every_localization():
    config = SimulationConfig(size=(32, 32), density=1.0, layout="uniform", drift_nm=200.0,
                              blinking=Blinking(on_time=50.0, off_time=50.0))
    stack = simulate_stack(100, config, seed=7)
    truth = stack.truth
    undrifted = truth[["x_nm", "y_nm"]].to_numpy() - truth[["drift_x_nm", "drift_y_nm"]].to_numpy()
    spread = (truth.assign(ux=undrifted[:, 0], uy=undrifted[:, 1])
              .groupby("emitter")[["ux", "uy"]].std().fillna(0.0))
    assert spread.to_numpy().max() < 1e-9
    np.testing.assert_allclose(stack.drift_nm[truth["frame"], 0], truth["drift_x_nm"])


def test_default_simulation_is_unchanged_by_the_new_options():
    """Frames without blinking, maps or drift are the first release's (same random stream)."""
    config = SimulationConfig(size=(16, 16), density=3.0)
    a = simulate_stack(3, config, seed=8)
    b = simulate_stack(3, config.with_values(kde_min_snr=0.0), seed=8)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert "emitter" not in a.truth and "drift_x_nm" not in a.truth


def test_kde_target_leaves_out_emitters_below_the_snr_floor():
    config = SimulationConfig(size=(16, 16), density=2.0, photons=(20.0, 40.0), background=200.0,
                              psf_sigma_px=1.5)
    bright = config.with_values(photons=(5000.0, 6000.0))
    assert simulate_stack(2, config.with_values(kde_min_snr=3.0), seed=9,
                          with_kde=True).kdes.max() == 0
    assert simulate_stack(2, bright.with_values(kde_min_snr=3.0), seed=9,
                          with_kde=True).kdes.max() > 0.5
