"""Block-sparse localization precision (issue 18) and its bound for unresolved pairs (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_smlm_diffusion import localize
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.io import read_localizations, write_localizations
from napari_smlm_diffusion.kde import render_kde
from napari_smlm_diffusion.localize import localizations_from_kde, photometry
from napari_smlm_diffusion.precision import (
    CLUSTER_RADIUS_SIGMAS,
    bounded_precision,
    clusters,
    inverse_diagonal,
    single_emitter_variances,
)
from napari_smlm_diffusion.psf import _model_and_jacobian, crlb_xy_nm, expected_image
from napari_smlm_diffusion.refine import PsfJacobian, joint_fit
from napari_smlm_diffusion.simulate import apply_camera_noise

SIGMA_PX = 1.2
SHAPE = (48, 48)


def dense_jacobian(x: np.ndarray, y: np.ndarray, photons: np.ndarray, shape=SHAPE
                   ) -> np.ndarray:
    """Reference Jacobian, built densely: emitter i's columns d/dx_i, d/dy_i, d/dN_i from its
    whole-frame model, kept on its window of +-(3 sigma + 1) pixels; then the background."""
    half = int(np.ceil(3.0 * SIGMA_PX)) + 1
    rows, cols = np.indices(shape)
    columns = []
    for xi, yi, ni in zip(x, y, photons, strict=True):
        _, jac = _model_and_jacobian(xi, yi, ni, 0.0, SIGMA_PX, shape)
        window = ((np.abs(cols - np.floor(xi)) <= half)
                  & (np.abs(rows - np.floor(yi)) <= half)).ravel()
        columns += [jac[0] * window, jac[1] * window, jac[2] * window]
    return np.column_stack([*columns, np.ones(shape[0] * shape[1])])


def information(x: np.ndarray, y: np.ndarray, photons: np.ndarray, background: float = 40.0
                ) -> np.ndarray:
    """Joint information matrix (x_i, y_i, N_i, then background) under Poisson noise."""
    jacobian = PsfJacobian(x, y, SIGMA_PX, SHAPE)
    return jacobian.gram(1.0 / jacobian.expected(photons, background), photons)


def test_patch_jacobian_products_equal_the_dense_jacobian_products():
    rng = np.random.default_rng(3)
    shape = (28, 40)
    for n in (0, 1, 40):
        # emitters partly outside the frame, clustered and overlapping
        x, y = rng.uniform(-2, 42, n), rng.uniform(-2, 30, n)
        photons, image = rng.uniform(1, 3000, n), rng.uniform(0, 100, shape[0] * shape[1])
        weights = rng.uniform(0.01, 1.0, image.size)
        jacobian = PsfJacobian(x, y, SIGMA_PX, shape)
        dense = dense_jacobian(x, y, photons, shape)
        unit = dense[:, [*range(2, 3 * n, 3), 3 * n]]
        np.testing.assert_allclose(jacobian.expected(photons, 7.0), dense[:, 2::3][:, :n]
                                   @ photons + 7.0, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(jacobian.project(image, photons), dense.T @ image,
                                   rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(jacobian.project(image), unit.T @ image, rtol=1e-12,
                                   atol=1e-9)
        weighted = dense.T @ (dense * weights[:, None])
        np.testing.assert_allclose(jacobian.gram(weights, photons), weighted, rtol=1e-10,
                                   atol=1e-9)
        np.testing.assert_allclose(jacobian.gram(), unit.T @ unit, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(jacobian.unit_matrix().toarray(), unit, rtol=1e-12,
                                   atol=1e-15)


def dense_diagonal(matrix: np.ndarray) -> np.ndarray:
    return np.diag(np.linalg.inv(matrix))


def test_clusters_join_chains_of_close_emitters():
    x = np.array([0.0, 1.0, 2.0, 10.0, 20.0, 20.5])
    labels = clusters(x, np.zeros(6), 1.5)
    assert labels[0] == labels[1] == labels[2] and labels[4] == labels[5]
    assert len(set(labels)) == 3
    assert len(clusters(np.zeros(0), np.zeros(0), 1.0)) == 0


def test_block_inverse_equals_the_dense_inverse_where_clusters_are_decoupled():
    rng = np.random.default_rng(0)
    # groups of 1-3 emitters (pairs as close as 0.3 sigma), groups 16 px apart: no PSF overlap
    centres = [(c, r) for c in (6.0, 22.0, 38.0) for r in (6.0, 22.0, 38.0)]
    x, y = [], []
    for cx, cy in centres:
        k = rng.integers(1, 4)
        x += list(cx + rng.uniform(-1.5, 1.5, k))
        y += list(cy + rng.uniform(-1.5, 1.5, k))
    x, y = np.array(x), np.array(y)
    matrix = information(x, y, rng.uniform(500, 5000, len(x)))
    labels = clusters(x, y, CLUSTER_RADIUS_SIGMAS * SIGMA_PX)
    assert len(set(labels)) == len(centres)
    np.testing.assert_allclose(inverse_diagonal(matrix, labels), dense_diagonal(matrix),
                               rtol=1e-9)


def test_block_inverse_is_close_to_dense_where_neighbours_barely_overlap():
    # a grid with a 6 sigma pitch: each emitter its own cluster, PSF tails still overlap
    grid = 4.0 + 6.0 * SIGMA_PX * np.arange(6)
    x, y = (a.ravel() for a in np.meshgrid(grid, grid))
    matrix = information(x, y, np.full(len(x), 2000.0))
    labels = clusters(x, y, CLUSTER_RADIUS_SIGMAS * SIGMA_PX)
    assert len(set(labels)) == len(x)
    assert np.abs(matrix[0, 3:3 * len(x)]).max() > 0  # coupled through the tails
    np.testing.assert_allclose(np.sqrt(inverse_diagonal(matrix, labels)),
                               np.sqrt(dense_diagonal(matrix)), rtol=1e-3)


def test_single_emitter_crlb_never_exceeds_the_joint_one():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(2, 46, 60), rng.uniform(2, 46, 60)
    matrix = information(x, y, rng.uniform(300, 5000, 60))
    single = single_emitter_variances(matrix)
    joint = dense_diagonal(matrix)[:-1]
    assert np.all(single <= joint * (1 + 1e-9))
    one = information(x[:1], y[:1], np.array([1000.0]))
    np.testing.assert_allclose(single_emitter_variances(one), dense_diagonal(one)[:-1],
                               rtol=1e-9)


def test_bound_keeps_resolved_values_and_bounds_the_others():
    single = np.array([10.0, 10.0, 10.0, 10.0, 300.0])
    joint = np.array([12.0, 5e6, np.nan, 12.0, 400.0])
    separation = np.array([100.0, 30.0, 30.0, np.inf, np.inf])
    bx, by, resolved = bounded_precision(joint, joint, single, single, separation, 120.0)
    assert resolved.tolist() == [1, 0, 0, 1, 0]
    assert bx[0] == 12.0 and bx[3] == 12.0  # resolved: the joint CRLB unchanged
    assert bx[1] == bx[2] == pytest.approx(np.hypot(10.0, 15.0))  # single (+) half separation
    assert bx[4] == 240.0  # no photons to speak of: one PSF sigma + at most one more
    np.testing.assert_array_equal(bx, by)
    # continuous at the resolution limit joint = separation / 2
    below = bounded_precision(np.array([14.999]), np.array([14.999]), single[:1], single[:1],
                              np.array([30.0]), 120.0)
    above = bounded_precision(np.array([15.001]), np.array([15.001]), single[:1], single[:1],
                              np.array([30.0]), 120.0)
    assert (below[2][0], above[2][0]) == (1, 0)
    assert above[0][0] - below[0][0] < 0.01


def test_reported_precision_is_between_the_single_crlb_and_the_bound_on_a_dense_frame():
    rng = np.random.default_rng(2)
    n = 120
    x, y = rng.uniform(1, 47, n), rng.uniform(1, 47, n)
    photons = rng.uniform(200, 4000, n)
    image = expected_image(SHAPE, x, y, photons, SIGMA_PX, 40.0) + rng.normal(0, 3, SHAPE)
    fit = joint_fit(image, x, y, photons, 40.0, SIGMA_PX, iterations=0)
    separation = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(separation, np.inf)
    separation = separation.min(axis=1)
    bx, by, resolved = bounded_precision(fit.std_x, fit.std_y, fit.single_x, fit.single_y,
                                         separation, SIGMA_PX)
    assert 0 < resolved.sum() < n  # both kinds occur at this density
    for bound, single, joint in ((bx, fit.single_x, fit.std_x), (by, fit.single_y, fit.std_y)):
        assert np.all(np.isfinite(bound))
        assert np.all(bound >= single * (1 - 1e-12))  # all single CRLBs are below one sigma
        assert np.all(bound <= SIGMA_PX + np.minimum(separation / 2, SIGMA_PX))
        np.testing.assert_array_equal(bound[resolved == 1], joint[resolved == 1])
    assert fit.std_x.max() > 10 * SIGMA_PX  # the unbounded joint CRLB explodes here


def test_close_pair_is_flagged_with_a_finite_value_and_isolated_emitters_keep_their_crlb():
    camera = preset("sCMOS")
    pixel, sigma_nm = camera.pixel_size, SIGMA_PX * camera.pixel_size
    x_nm = np.array([800.0, 3200.0, 2000.0, 2060.0])  # the last two 60 nm apart
    y_nm = np.array([800.0, 900.0, 3000.0, 3000.0])
    photons, background = 3000.0, 40.0
    expected = expected_image(SHAPE, x_nm / pixel, y_nm / pixel, photons, SIGMA_PX, background)
    frame = camera.adu_to_photons(apply_camera_noise(expected, camera,
                                                     np.random.default_rng(3)))
    kde = render_kde(x_nm, y_nm, (SHAPE[0] * 4, SHAPE[1] * 4), pixel / 4, sigma_px=0.5)
    table = localizations_from_kde(kde, frame, 0, camera, sigma_nm, threshold=0.3)
    assert len(table) == 4
    table = table.sort_values(["y_nm", "x_nm"]).reset_index(drop=True)
    pair, isolated = table.iloc[2:], table.iloc[:2]
    assert pair["resolved"].tolist() == [0, 0]
    separation = np.hypot(*np.diff(pair[["x_nm", "y_nm"]].to_numpy(), axis=0)[0])
    for column in ("uncertainty_x_nm", "uncertainty_y_nm"):
        assert np.all(np.isfinite(pair[column]))
        assert np.all(pair[column] <= sigma_nm + separation / 2)
    assert isolated["resolved"].tolist() == [1, 1]
    for _, row in isolated.iterrows():
        expected_x, expected_y = crlb_xy_nm(
            row.x_nm / pixel, row.y_nm / pixel, row.photons, row.background, SIGMA_PX, pixel,
            shape=SHAPE, read_noise_photons=camera.read_noise_photons,
            excess_noise=1.0 / np.sqrt(camera.quantum_efficiency))  # photons before the QE
        assert row.uncertainty_x_nm == pytest.approx(expected_x, rel=0.02)
        assert row.uncertainty_y_nm == pytest.approx(expected_y, rel=0.02)


def test_resolved_flag_is_written_to_the_csv(tmp_path):
    camera = preset("sCMOS")
    x_nm, y_nm = np.array([800.0, 2000.0, 2060.0]), np.array([800.0, 3000.0, 3000.0])
    expected = expected_image(SHAPE, x_nm / 100.0, y_nm / 100.0, 3000.0, SIGMA_PX, 40.0)
    frame = camera.adu_to_photons(apply_camera_noise(expected, camera,
                                                     np.random.default_rng(4)))
    kde = render_kde(x_nm, y_nm, (SHAPE[0] * 4, SHAPE[1] * 4), 25.0, sigma_px=0.5)
    table = localizations_from_kde(kde, frame, 0, camera, 120.0, threshold=0.3)
    assert sorted(table["resolved"]) == [0, 0, 1]
    header = write_localizations(tmp_path / "locs.csv", table).read_text().splitlines()[0]
    assert header.endswith('"resolved"')
    back = read_localizations(tmp_path / "locs.csv")
    np.testing.assert_array_equal(back["resolved"], table["resolved"])


def test_photometry_of_many_emitters_solves_iteratively_to_the_same_photons(monkeypatch):
    """Frames with more detections than a dense solve allows (large frames) take the iterative
    least-squares path: same photons and background as the dense solve."""
    rng = np.random.default_rng(4)
    n = 60
    x, y = rng.uniform(2, 46, n), rng.uniform(2, 46, n)
    truth = rng.uniform(500, 5000, n)
    image = expected_image(SHAPE, x, y, truth, SIGMA_PX, 20.0) + rng.normal(0, 2, SHAPE)
    dense = photometry(image, x * 100.0, y * 100.0, 100.0, SIGMA_PX * 100.0)
    monkeypatch.setattr(localize, "DENSE_SOLVE_MAX", n - 1)
    iterative = photometry(image, x * 100.0, y * 100.0, 100.0, SIGMA_PX * 100.0)
    np.testing.assert_allclose(iterative[0], dense[0], rtol=2e-3)  # lsqr stops at 1e-7
    assert iterative[1] == pytest.approx(dense[1], rel=1e-3)
    assert iterative[2] == pytest.approx(dense[2], rel=1e-3)
