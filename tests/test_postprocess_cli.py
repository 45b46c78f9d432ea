"""The post-processing commands end to end (parser built here; the lead wires `register`)."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.cli.postprocess import register
from napari_smlm_diffusion.io import (
    OutputError,
    TableError,
    open_stack,
    read_localizations,
    write_localizations,
)
from napari_smlm_diffusion.postprocess import synthetic
from napari_smlm_diffusion.postprocess.common import PostprocessError
from napari_smlm_diffusion.postprocess.drift_curve import read_drift_curve
from napari_smlm_diffusion.postprocess.picasso_format import read_picasso


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    rng = np.random.default_rng(21)
    sites = synthetic.structure_sites(4000.0, rng, "rings")
    true = synthetic.smooth_drift(800, 250.0, rng)
    table = synthetic.sample_sites(sites, 800, 25, (10.0, 20.0), rng, true + 400.0)
    path = write_localizations(tmp_path_factory.mktemp("cli") / "locs.csv", table)
    return path, table, true


def test_drift_writes_corrected_table_and_plot(tmp_path, drifting, capsys):
    path, table, true = drifting
    out, plot, curve = tmp_path / "corrected.csv", tmp_path / "drift.png", tmp_path / "curve.csv"
    assert run("drift", path, "-o", out, "--window", "40", "--plot", plot, "--curve", curve) == 0
    assert "20 windows" in capsys.readouterr().out
    corrected = read_localizations(out)
    assert len(corrected) == len(table)
    applied = table[["x_nm", "y_nm"]].to_numpy() - corrected[["x_nm", "y_nm"]].to_numpy()
    error = applied - true[table["frame"]]
    error -= error.mean(axis=0)
    assert np.sqrt(np.mean(np.sum(error**2, axis=1))) <= 5.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frames = int(table["frame"].max()) + 1
    np.testing.assert_allclose(read_drift_curve(curve)[table["frame"]], applied, atol=1e-6)
    assert read_drift_curve(curve).shape == (frames, 2)


def test_merge_csv_to_picasso(tmp_path):
    rng = np.random.default_rng(3)
    blinks = synthetic.simulate_blinks(400, 300, 10_000.0, 3.0, (8.0, 15.0), rng)
    path = write_localizations(tmp_path / "blinks.csv", blinks)
    out = tmp_path / "merged.hdf5"
    assert run("merge", path, "-o", out, "--radius", "80", "--gap", "0",
               "--camera-pixel-size", "100") == 0
    merged, info = read_picasso(out)
    assert len(merged) == pytest.approx(400, rel=0.02)
    assert merged["frames_on"].sum() == len(blinks)
    assert info[-1]["Pixelsize"] == 100.0


def test_render_tiff_with_pixel_size(tmp_path, drifting):
    path, table, _ = drifting
    out = tmp_path / "image.tif"
    assert run("render", path, "-o", out, "--pixel-size", "10", "--blur", "uncertainty",
               "--field", "5000", "5000") == 0
    with open_stack(out) as stack:
        assert stack.pixel_size_nm == pytest.approx(10.0)
        image = stack.data[0]
    assert image.shape == (500, 500)
    assert image.sum() == pytest.approx(len(table), rel=1e-3)


def test_frc_json_and_plot(tmp_path, drifting, capsys):
    path, _, _ = drifting
    corrected = tmp_path / "c.csv"
    run("drift", path, "-o", corrected)
    capsys.readouterr()
    plot = tmp_path / "frc.png"
    assert run("frc", corrected, "--json", "--plot", plot) == 0
    result = json.loads(capsys.readouterr().out)
    assert 20 < result["resolution_nm"] < 120
    assert plot.stat().st_size > 1000
    assert run("frc", path, "--json") == 0  # drift blurs: coarser resolution before correction
    assert json.loads(capsys.readouterr().out)["resolution_nm"] > result["resolution_nm"]


def test_convert_round_trip(tmp_path, drifting):
    path, _, _ = drifting
    hdf5, back = tmp_path / "locs.hdf5", tmp_path / "back.csv"
    assert run("convert", path, "-o", hdf5, "--camera-pixel-size", "110", "--width", "64",
               "--height", "64") == 0
    assert run("convert", hdf5, "-o", back) == 0
    original, again = read_localizations(path), read_localizations(back)
    assert np.array_equal(original["frame"], again["frame"])
    for column in ("x_nm", "y_nm", "uncertainty_nm", "photons"):
        assert np.allclose(original[column], again[column], rtol=2e-7), column


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        (["convert", "{csv}", "-o", "{tmp}/out.txt"], PostprocessError, "unknown localization"),
        (["merge", "{tmp}/in.xyz", "-o", "{tmp}/out.csv"], PostprocessError, "expected .csv"),
        (["convert", "{csv}", "-o", "{tmp}/out.hdf5"], PostprocessError, "camera-pixel-size"),
        (["drift", "{csv}", "-o", "{tmp}/out.csv", "--plot", "{tmp}/d.pdf"], PostprocessError,
         "PNG"),
        (["render", "{csv}", "-o", "{tmp}/out.png", "--pixel-size", "10"], PostprocessError,
         "TIFF"),
        (["drift", "{csv}", "-o", "{tmp}/missing/out.csv"], OutputError, "does not exist"),
        (["drift", "{one_frame}", "-o", "{tmp}/out.csv", "--plot", "{tmp}/d.png"],
         PostprocessError, "several frames"),
        (["merge", "{empty}", "-o", "{tmp}/out.csv"], TableError, "empty"),
        (["render", "{nan}", "-o", "{tmp}/out.tif", "--pixel-size", "10"], TableError, "NaN"),
        (["frc", "{no_xy}"], TableError, "missing column"),
        (["render", "{csv}", "-o", "{tmp}/out.tif", "--pixel-size", "10", "--blur",
          "uncertainty"], PostprocessError, "uncertainty"),
    ],
)
def test_bad_input_gives_one_line_and_no_files(tmp_path, command, error, message):
    tmp = tmp_path / "work"
    tmp.mkdir()
    files = {"tmp": tmp, "csv": tmp_path / "plain.csv", "one_frame": tmp_path / "one.csv",
             "empty": tmp_path / "empty.csv", "nan": tmp_path / "nan.csv",
             "no_xy": tmp_path / "no_xy.csv"}
    write_localizations(files["csv"], pd.DataFrame({"frame": [0, 1], "x_nm": [1.0, 2.0],
                                                    "y_nm": [1.0, 2.0]}))
    write_localizations(files["one_frame"], pd.DataFrame({"frame": np.zeros(50, int),
                                                          "x_nm": np.arange(50.0), "y_nm": 1.0}))
    files["empty"].write_text('"id","frame","x [nm]","y [nm]"\n')
    files["nan"].write_text('"frame","x [nm]","y [nm]"\n1,NaN,2\n2,3,4\n')
    files["no_xy"].write_text('"frame","x","y"\n1,2,3\n')
    with pytest.raises(error, match=message) as info:
        run(*(part.format(**files) for part in command))
    assert "\n" not in str(info.value)
    assert list(tmp.iterdir()) == []


def test_bad_option_values_exit_with_usage(capsys):
    for argv in (["merge", "a.csv", "-o", "b.csv", "--radius", "-5"],
                 ["render", "a.csv", "-o", "b.tif", "--pixel-size", "10", "--blur", "soft"],
                 ["drift", "a.csv", "-o", "b.csv", "--window", "0"]):
        with pytest.raises(SystemExit):
            run(*argv)
    assert "expected" in capsys.readouterr().err
