import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion import matching as metrics
from napari_smlm_diffusion.metrics import (
    evaluate,
    format_table,
    frc_curve,
    frc_from_localizations,
    frc_resolution,
    match_localizations,
    match_points,
    uncertainty_calibration,
)


def table(rows, **extra):
    """Localization table from (frame, x_nm, y_nm) tuples."""
    df = pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm"]).astype(
        {"frame": int, "x_nm": float, "y_nm": float}
    )
    return df.assign(**extra)


TRUTH = table([(0, 100.0, 100.0), (0, 900.0, 900.0), (1, 500.0, 500.0), (3, 50.0, 700.0)])


def test_perfect_match():
    m = evaluate(TRUTH, TRUTH.copy())
    assert (m["tp"], m["fp"], m["fn"]) == (4, 0, 0)
    assert m["jaccard"] == 100.0
    assert m["rmse_lateral_nm"] == 0.0
    assert m["efficiency"] == 100.0
    assert m["precision"] == m["recall"] == 100.0
    assert "calibration_x" not in m


def test_shifted_localization_rmse():
    locs = TRUTH.copy()
    locs.loc[2, ["x_nm", "y_nm"]] += [3.0, 4.0]
    match = match_localizations(TRUTH, locs)
    k = np.flatnonzero(match.truth_index == 2)[0]
    assert match.loc_index[k] == 2
    assert (match.dx[k], match.dy[k]) == (3.0, 4.0)
    m = evaluate(TRUTH, locs)
    assert m["rmse_lateral_nm"] == pytest.approx(np.sqrt(25 / 4))
    assert m["rmse_x_nm"] == pytest.approx(np.sqrt(9 / 4))
    assert m["rmse_y_nm"] == pytest.approx(np.sqrt(16 / 4))

    single = evaluate(TRUTH.iloc[[2]], locs.iloc[[2]])
    assert single["rmse_lateral_nm"] == pytest.approx(5.0)
    assert single["efficiency"] == pytest.approx(95.0)


def test_false_positive_and_negative():
    locs = pd.concat([TRUTH.iloc[:3], table([(2, 10.0, 10.0)])], ignore_index=True)
    m = evaluate(TRUTH, locs)
    assert (m["tp"], m["fp"], m["fn"], m["n_truth"], m["n_locs"]) == (3, 1, 1, 4, 4)
    assert m["jaccard"] == pytest.approx(100 * 3 / 5)
    assert m["precision"] == m["recall"] == pytest.approx(75.0)
    assert m["efficiency"] == pytest.approx(60.0)


def test_pair_beyond_tolerance_is_fp_and_fn():
    truth = table([(0, 0.0, 0.0)])
    near = evaluate(truth, table([(0, 0.0, 100.0)]), tolerance_nm=100.0)
    assert (near["tp"], near["fp"], near["fn"]) == (1, 0, 0)  # boundary is inclusive
    far = evaluate(truth, table([(0, 0.0, 100.1)]), tolerance_nm=100.0)
    assert (far["tp"], far["fp"], far["fn"]) == (0, 1, 1)
    assert far["jaccard"] == 0.0
    assert np.isnan(far["rmse_lateral_nm"]) and np.isnan(far["efficiency"])


def test_matching_is_one_to_one():
    truth = table([(0, 0.0, 0.0)])
    locs = table([(0, 20.0, 0.0), (0, 0.0, 10.0)])
    match = match_localizations(truth, locs)
    assert (match.tp, match.fp, match.fn) == (1, 1, 0)
    assert match.loc_index.tolist() == [1]


def test_matching_is_per_frame():
    truth = table([(0, 0.0, 0.0)])
    m = evaluate(truth, table([(1, 0.0, 0.0)]))
    assert (m["tp"], m["fp"], m["fn"]) == (0, 1, 1)


def test_hungarian_beats_greedy():
    # Greedy nearest neighbour takes the closest pair (T1, L0) at 45 nm first, leaving
    # (T0, L1) at 160 nm: total 205 nm. The optimal assignment totals 55 + 60 = 115 nm.
    truth = table([(0, 0.0, 0.0), (0, 100.0, 0.0)])
    locs = table([(0, 55.0, 0.0), (0, 160.0, 0.0)])
    match = match_localizations(truth, locs)
    assert dict(zip(match.truth_index, match.loc_index, strict=True)) == {0: 0, 1: 1}
    assert np.hypot(match.dx, match.dy).sum() == pytest.approx(115.0)
    # With a 150 nm tolerance greedy would find one match; the optimum keeps both.
    assert match_localizations(truth, locs, tolerance_nm=150.0).tp == 2


def test_sparse_path_agrees_with_dense(monkeypatch):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 3000, (400, 2))
    truth = table(np.column_stack([rng.integers(0, 3, 400), xy]))
    locs = truth.sample(frac=0.8, random_state=1).reset_index(drop=True)
    locs[["x_nm", "y_nm"]] += rng.normal(0, 60, (len(locs), 2))
    locs = pd.concat([locs, table(np.column_stack([np.zeros(50), rng.uniform(0, 3000, (50, 2))]))])
    dense = match_localizations(truth, locs, tolerance_nm=150.0)
    monkeypatch.setattr(metrics, "_DENSE_MAX_PAIRS", 0)
    sparse = match_localizations(truth, locs, tolerance_nm=150.0)
    assert dense.tp == sparse.tp > 200
    assert set(zip(dense.truth_index, dense.loc_index, strict=True)) == set(
        zip(sparse.truth_index, sparse.loc_index, strict=True)
    )


def test_empty_inputs():
    empty = table([])
    m = evaluate(empty, empty)
    assert (m["tp"], m["fp"], m["fn"], m["jaccard"]) == (0, 0, 0, 0.0)
    assert np.isnan(m["rmse_lateral_nm"])
    m = evaluate(TRUTH, empty)
    assert (m["fn"], m["jaccard"], m["recall"]) == (4, 0.0, 0.0)
    assert "nan" in format_table(m)


def test_missing_column_raises():
    with pytest.raises(ValueError, match="y_nm"):
        evaluate(TRUTH, TRUTH.drop(columns="y_nm"))
    with pytest.raises(ValueError, match="frame"):
        frc_from_localizations(TRUTH.drop(columns="frame"), (1000, 1000), 10.0)


def test_calibration_from_simulated_errors():
    rng = np.random.default_rng(0)
    sigma_x = rng.uniform(5, 30, 20_000)
    sigma_y = rng.uniform(5, 30, 20_000)
    dx, dy = rng.normal(0, sigma_x), rng.normal(0, sigma_y)
    cx, cy = uncertainty_calibration(dx, dy, sigma_x, sigma_y)
    assert cx == pytest.approx(1.0, rel=0.05) and cy == pytest.approx(1.0, rel=0.05)
    cx, cy = uncertainty_calibration(dx, dy, sigma_x / 2, sigma_y / 2)
    assert cx == pytest.approx(2.0, rel=0.05) and cy == pytest.approx(2.0, rel=0.05)


def test_evaluate_reports_calibration():
    rng = np.random.default_rng(1)
    n = 2000
    truth = table(np.column_stack([np.arange(n), rng.uniform(0, 5000, (n, 2))]))
    sigma = rng.uniform(5, 20, n)
    locs = truth.assign(
        x_nm=truth["x_nm"] + rng.normal(0, sigma),
        y_nm=truth["y_nm"] + rng.normal(0, 2 * sigma),
        uncertainty_nm=sigma,
    )
    m = evaluate(truth, locs)
    assert m["calibration_x"] == pytest.approx(1.0, rel=0.1)
    assert m["calibration_y"] == pytest.approx(2.0, rel=0.1)
    m = evaluate(truth, locs.assign(uncertainty_y_nm=2 * sigma))
    assert m["calibration_y"] == pytest.approx(1.0, rel=0.1)
    assert "Calibration y" in format_table(m)


def bandlimited(rng, n, cutoff):
    """Unit-variance random pattern with no power above ``cutoff`` cycles/pixel."""
    spectrum = np.fft.fft2(rng.standard_normal((n, n)))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n)))
    spectrum[k > cutoff] = 0
    pattern = np.fft.ifft2(spectrum).real
    return pattern / pattern.std()


def test_frc_of_noisy_bandlimited_pattern():
    rng = np.random.default_rng(0)
    n, pixel, cutoff = 256, 10.0, 0.2  # pattern scale 1 / cutoff = 50 nm
    pattern = bandlimited(rng, n, cutoff)[:, :200]  # non-square
    noise = np.sqrt(1 / (np.pi * cutoff**2) / 10)  # in-band SNR 10 per frequency
    a = pattern + noise * rng.standard_normal(pattern.shape)
    b = pattern + noise * rng.standard_normal(pattern.shape)
    resolution = frc_resolution(a, b, pixel)
    assert resolution == pytest.approx(pixel / cutoff, rel=0.15)
    freq, frc = frc_curve(a, b, pixel)
    assert freq[-1] == pytest.approx(0.5 / pixel)
    assert frc[1:40].mean() > 0.85  # SNR / (1 + SNR) = 0.91 in band
    assert np.abs(frc[60:]).mean() < 0.1  # uncorrelated noise above the cutoff (ring 51)


def test_frc_of_independent_noise_is_low():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 256, 256))
    _, frc = frc_curve(a, b, 10.0)
    assert np.abs(frc[1:]).mean() < 0.1
    assert np.abs(frc[10:]).max() < 0.3


def test_frc_of_image_with_itself_is_one():
    image = np.random.default_rng(2).poisson(3.0, (120, 90))
    _, frc = frc_curve(image, image, 5.0)
    np.testing.assert_allclose(frc, 1.0, rtol=1e-12)
    assert np.isnan(frc_resolution(image, image, 5.0))


def test_frc_from_localizations_scales_with_precision():
    rng = np.random.default_rng(3)
    size, n_frames, per_frame = 3000.0, 2000, 20
    sites = rng.uniform(200, size - 200, (300, 2))
    frames = np.repeat(np.arange(n_frames), per_frame)
    resolutions = []
    for sigma in (10.0, 30.0):
        xy = sites[rng.integers(0, len(sites), frames.size)]
        xy = xy + rng.normal(0, sigma, xy.shape)
        locs = pd.DataFrame({"frame": frames, "x_nm": xy[:, 0], "y_nm": xy[:, 1]})
        resolutions.append(frc_from_localizations(locs, (size, size), 5.0, block_size=50))
    # For well-sampled point-like sites the FRC resolution is about 2.5 sigma.
    assert 20 < resolutions[0] < 30
    assert 60 < resolutions[1] < 90
    one_block = pd.DataFrame({"frame": np.arange(10), "x_nm": 500.0, "y_nm": 500.0})
    assert np.isnan(frc_from_localizations(one_block, (size, size), 5.0, block_size=50))


def test_format_table():
    text = format_table(evaluate(TRUTH, TRUTH))
    lines = text.splitlines()
    assert lines[0].split() == ["Metric", "Value"]
    assert any(line.startswith("Jaccard index [%]") and line.endswith("100.000") for line in lines)
    assert any("RMSE lateral [nm]" in line for line in lines)
    assert len({len(line) for line in lines}) == 1


def test_match_points_pairs_as_many_as_possible_then_the_closest():
    # greedy nearest-first would pair a0-b0 (distance 1) and leave a1 unmatched
    a = np.array([[0.0, 0.0], [2.0, 0.0]])
    b = np.array([[1.0, 0.0], [-1.5, 0.0]])
    rows, cols = match_points(a, b, tol=1.6)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
    rows, cols = match_points(a, b[:0], tol=1.0)
    assert rows.size == cols.size == 0
    rows, cols = match_points(a, b + 10.0, tol=1.0)
    assert rows.size == cols.size == 0
