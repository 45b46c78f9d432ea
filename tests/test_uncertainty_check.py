"""Label-free uncertainty check (issue 14): simulated molecules seen in consecutive frames."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.cli.check import register
from napari_smlm_diffusion.io import write_localizations
from napari_smlm_diffusion.uncertainty_check import (
    UncertaintyCheckError,
    check_uncertainty,
    describe,
    matched_pairs,
)


def blinking_localizations(scale: float = 1.0, seed: int = 0, frames: int = 200,
                           molecules: int = 600, outliers: float = 0.0,
                           outlier_noise: float = 1.0, largest_nm: float = 40.0,
                           mean_on: float = 3.0, field_nm: float = 20_000.0) -> pd.DataFrame:
    """Molecules on for runs of consecutive frames (geometric, mean ``mean_on``; 1: every
    molecule in one frame only, frames independent), each localized with
    true per-axis noise s_x, s_y (5-``largest_nm`` nm, log-uniform) and reported as ``scale`` *
    s; a share ``outliers`` of the localizations has ``outlier_noise`` times the noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(molecules):
        x, y = rng.uniform(0, field_nm, 2)
        sx, sy = np.exp(rng.uniform(np.log(5), np.log(largest_nm), 2))
        start = rng.integers(0, frames)
        for frame in range(start, min(frames, start + rng.geometric(1 / mean_on))):
            noise = outlier_noise if rng.uniform() < outliers else 1.0
            rows.append((frame, x + rng.normal(0, noise * sx), y + rng.normal(0, noise * sy),
                         scale * sx, scale * sy))
    table = pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm", "uncertainty_x_nm",
                                        "uncertainty_y_nm"])
    table["uncertainty_nm"] = np.sqrt(0.5 * (table.uncertainty_x_nm**2
                                             + table.uncertainty_y_nm**2))
    return table.sort_values("frame", kind="stable").reset_index(drop=True)


def test_right_uncertainties_give_spread_one_and_a_positive_rank_correlation():
    result = check_uncertainty(blinking_localizations(1.0))
    assert result.pairs > 500
    assert 0.9 < result.spread < 1.1
    assert 0.9 < result.spread_x < 1.1 and 0.9 < result.spread_y < 1.1
    assert result.spearman > 0.4
    assert result.truncated_fraction < 1e-3
    assert 8 < result.median_uncertainty_nm < 25
    assert describe(result).startswith("uncertainties match the observed scatter and rank")


def test_uncertainties_half_the_truth_give_spread_two_and_the_reading_says_so():
    result = check_uncertainty(blinking_localizations(0.5))
    assert 1.8 < result.spread < 2.2
    assert "2.0x too small" in describe(result)
    over = check_uncertainty(blinking_localizations(2.0))
    assert 0.45 < over.spread < 0.55
    assert "2.0x too large" in describe(over)


def test_heavy_tails_right_on_average_are_told_apart_from_typical_molecules():
    # Reported sigma 1.5x the core noise, 4 % of localizations 6x the core noise: RMS of
    # error / sigma sqrt(0.96 / 1.5^2 + 0.04 * 36 / 1.5^2) = 1.02 (calibrated in RMS, what the
    # posterior is fitted for), while typical molecules scatter 1.5x less than reported.
    table = blinking_localizations(1.5, molecules=2000, outliers=0.04, outlier_noise=6.0,
                                   largest_nm=15.0)
    result = check_uncertainty(table)
    assert 0.92 < result.rms_spread < 1.12
    assert result.spread < 0.8
    reading = describe(result)
    assert reading.startswith("uncertainties are right on average but about")
    assert "too large for typical molecules" in reading and "RMS 1.0" in reading
    plain = check_uncertainty(blinking_localizations(1.0))
    assert 0.9 < plain.rms_spread < 1.1  # Gaussian errors: RMS and robust spread agree


def test_independent_frames_are_refused_as_no_molecule_stays_on():
    # Every molecule in one frame only (the quick-start sample simulated without --on-time):
    # the pairs of consecutive frames are different molecules, no closer than frames 10 apart.
    # 80 molecules per frame in 5 x 5 um (3.2 per um^2).
    table = blinking_localizations(1.0, frames=50, molecules=4000, mean_on=1.0, field_nm=5000)
    with pytest.raises(UncertaintyCheckError, match="do not seem to stay on from one frame"):
        check_uncertainty(table)
    # as dense, but molecules staying on about 3 frames: checked
    dense = blinking_localizations(1.0, frames=50, molecules=1500, field_nm=5000)
    assert check_uncertainty(dense).pairs > 500


def test_pairs_are_mutual_nearest_neighbours_of_consecutive_frames_within_the_radius():
    table = pd.DataFrame({"frame": [0, 0, 1, 1, 3, 4], "x_nm": [0.0, 100.0, 10.0, 500.0, 0, 0],
                          "y_nm": [0.0, 0.0, 0.0, 0.0, 0.0, 300.0],
                          "uncertainty_nm": [3.0, 4.0, 4.0, 5.0, 5.0, 5.0]})
    pairs = matched_pairs(table, radius_nm=200.0)
    # 0 <-> 10 (mutual), 100 -> 10 is not mutual, 500 has no partner, frames 3/4 beyond 200 nm
    assert pairs[["frame", "dx", "dy"]].values.tolist() == [[0, 10.0, 0.0]]
    assert pairs["predicted_x"].tolist() == [5.0]


def test_the_reading_warns_when_the_radius_cuts_true_pairs():
    table = blinking_localizations(1.0)
    wide, narrow = check_uncertainty(table), check_uncertainty(table, radius_nm=40.0)
    assert narrow.truncated_fraction > 0.05 and wide.truncated_fraction < 1e-3
    assert narrow.spread < wide.spread - 0.05  # the bias the warning is about
    assert "matching radius cuts about" in describe(narrow)
    assert "matching radius" not in describe(wide)


def test_equal_uncertainties_give_no_rank_correlation_and_valid_json():
    table = blinking_localizations(1.0)
    table[["uncertainty_x_nm", "uncertainty_y_nm"]] = 20.0
    result = check_uncertainty(table)
    assert np.isnan(result.spearman)
    assert "do not rank molecules" in describe(result)
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["spearman"] is None


def test_bad_tables_give_one_line_errors():
    table = blinking_localizations(1.0, molecules=100)
    with pytest.raises(UncertaintyCheckError, match="no uncertainty column"):
        check_uncertainty(table.drop(columns=["uncertainty_x_nm", "uncertainty_nm"]))
    with pytest.raises(UncertaintyCheckError, match="lacks column"):
        check_uncertainty(table.drop(columns=["y_nm"]))
    every_other = table[table.frame % 2 == 0]
    with pytest.raises(UncertaintyCheckError, match="no two consecutive frames"):
        check_uncertainty(every_other)
    with pytest.raises(UncertaintyCheckError, match=r"only \d+ molecules .*at least 20 needed"):
        check_uncertainty(table[table.frame < 3])
    with pytest.raises(UncertaintyCheckError, match="positive number of nm"):
        check_uncertainty(table, radius_nm=0.0)
    with pytest.raises(UncertaintyCheckError, match="no uncertainty column and lacks y_nm") as info:
        check_uncertainty(table.drop(columns=["uncertainty_x_nm", "uncertainty_nm", "y_nm"]))
    assert "\n" not in str(info.value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser


def test_command_prints_the_reading_or_json(tmp_path, capsys):
    path = write_localizations(tmp_path / "locs.csv", blinking_localizations(0.5))
    args = _parser().parse_args(["check-uncertainty", str(path)])
    args.func(args)
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "too small" in line
    args = _parser().parse_args(["check-uncertainty", str(path), "--json", "--radius", "300"])
    args.func(args)
    result = json.loads(capsys.readouterr().out)
    assert result["radius_nm"] == 300.0 and result["pairs"] > 500
    assert 1.8 < result["spread"] < 2.2 and "too small" in result["reading"]


def test_command_rejects_bad_arguments_and_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["check-uncertainty", "x.csv", "--radius", "-5"])
    assert "positive number of nm" in capsys.readouterr().err
    table = blinking_localizations(1.0, molecules=100)
    path = write_localizations(tmp_path / "sparse.csv", table[table.frame % 2 == 0])
    args = _parser().parse_args(["check-uncertainty", str(path)])
    with pytest.raises(ValueError, match="no two consecutive frames"):
        args.func(args)
    args = _parser().parse_args(["check-uncertainty", str(tmp_path / "missing.csv")])
    with pytest.raises(ValueError, match="missing.csv"):
        args.func(args)
