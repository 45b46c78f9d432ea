"""Picasso HDF5: pixel units and pixel-centre convention, .yaml sidecar, exact round trips.

picassosr itself is not an installed test dependency (it pins PyQt6 and pandas < 3, this project
uses pandas 3; test_postprocess_picasso_loader.py runs Picasso's own loader when it is installed
with --no-deps), so here ``_picasso_load_locs`` reads a file the way picassosr 0.11.3's
``io.load_locs`` does: the compound ``locs`` dataset column by column into a DataFrame
(``_read_locs_dataset``), the metadata with ``yaml.load_all`` from the ``.yaml`` sidecar
(``load_info``), then ``lib.ensure_sanity`` (Width/Height/Frames required; rows with NaN,
negative or out-of-image values dropped).
"""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from napari_smlm_diffusion.io import TableError, read_localizations, write_localizations
from napari_smlm_diffusion.postprocess.common import PostprocessError
from napari_smlm_diffusion.postprocess.picasso_format import read_picasso, sidecar, write_picasso
from table_helpers import random_localizations


def _picasso_load_locs(path):
    with h5py.File(path, "r") as handle:
        dataset = handle["locs"]
        locs = pd.DataFrame({name: dataset[name] for name in dataset.dtype.names})
    with open(sidecar(path)) as handle:
        info = list(yaml.load_all(handle, Loader=yaml.UnsafeLoader))

    def get(key):
        return next((d[key] for d in reversed(info) if key in d), None)

    for key in ("Width", "Height", "Frames"):
        assert get(key) is not None, key
    locs = locs.replace([np.inf, -np.inf], np.nan).dropna()
    locs = locs[(locs["x"] < get("Width")) & (locs["y"] < get("Height"))]
    for name in ("x", "y", "lpx", "lpy", "photons", "sx", "sy"):
        if name in locs:
            locs = locs[locs[name] >= 0]
    return locs, info


@pytest.fixture
def table():
    return random_localizations(4, 500, 300)


def test_pixel_centre_convention_and_units(tmp_path):
    table = pd.DataFrame({"frame": [0, 7], "x_nm": [160.0 * 3.5, 80.0], "y_nm": [160.0, 240.0],
                          "sigma_nm": [128.0, 160.0], "uncertainty_nm": [16.0, 8.0],
                          "photons": [1000.0, 2000.0]})
    path = write_picasso(tmp_path / "locs.hdf5", table, 160.0, width=64, height=32)
    locs, info = _picasso_load_locs(path)
    # the centre of camera pixel (row 0, column 3): x = 3 in Picasso, 3.5 pixels from our origin
    assert locs["x"].tolist() == [3.0, 0.0] and locs["y"].tolist() == [0.5, 1.0]
    assert locs["sx"].tolist() == pytest.approx([0.8, 1.0], rel=1e-7)
    assert locs["lpx"].tolist() == pytest.approx([0.1, 0.05], rel=1e-7)
    assert locs["frame"].tolist() == [0, 7] and locs["frame"].dtype == np.uint32
    assert locs["x"].dtype == np.float32
    ours = info[-1]
    assert (ours["Width"], ours["Height"], ours["Frames"], ours["Pixelsize"]) == (64, 32, 8, 160.0)
    with h5py.File(path, "r") as handle:  # Picasso >= 0.11 also reads embedded metadata
        assert json.loads(handle["metadata"][()])[-1]["Pixelsize"] == 160.0


def test_csv_to_hdf5_to_csv_round_trip(tmp_path, table):
    csv = write_localizations(tmp_path / "a.csv", table)
    original = read_localizations(csv)
    hdf5 = write_picasso(tmp_path / "a.hdf5", original, 107.0)
    locs, _ = _picasso_load_locs(hdf5)
    assert len(locs) == len(table)  # Picasso keeps every row
    back, info = read_picasso(hdf5)
    assert info[-1]["Pixelsize"] == 107.0
    assert list(back.columns) == ["frame", "x_nm", "y_nm", "sigma_nm", "photons", "background",
                                  "bkgstd", "uncertainty_nm"]
    csv2 = write_localizations(tmp_path / "b.csv", back)
    again = read_localizations(csv2)
    assert np.array_equal(again["frame"], original["frame"])
    for column in original.columns.drop("frame"):
        # float32 in the HDF5 file: equal to float32 precision
        assert np.allclose(again[column], original[column], rtol=2e-7, atol=0), column
    # a second round trip through HDF5 is exact
    write_picasso(tmp_path / "c.hdf5", again, 107.0)
    with h5py.File(hdf5, "r") as a, h5py.File(tmp_path / "c.hdf5", "r") as b:
        assert a["locs"].dtype == b["locs"].dtype
        assert np.array_equal(a["locs"][()], b["locs"][()])


def test_reads_a_file_written_like_picasso(tmp_path):
    # as picasso.io.save_locs: DataFrame.to_records into "locs", yaml.dump_all of the info
    locs = pd.DataFrame({
        "frame": np.array([0, 1, 1], np.uint32), "x": np.array([10.25, 0.0, 5.5], np.float32),
        "y": np.array([3.0, 2.0, 1.0], np.float32), "photons": np.float32([900, 800, 700]),
        "sx": np.float32([1.0, 1.1, 0.9]), "sy": np.float32([1.0, 1.1, 0.9]),
        "bg": np.float32([10, 11, 12]), "lpx": np.float32([0.1, 0.2, 0.3]),
        "lpy": np.float32([0.1, 0.25, 0.3]), "net_gradient": np.float32([5, 6, 7]),
        "len": np.uint32([3, 1, 2]), "n": np.uint32([2, 1, 2]),
    })
    path = tmp_path / "picasso_locs.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("locs", data=locs.to_records(index=False))
    info = [{"Byte Order": "<", "Data Type": "uint16", "Frames": 2, "Height": 32, "Width": 32},
            {"Generated by": "Picasso Localize", "Pixelsize": 130}]
    with open(tmp_path / "picasso_locs.yaml", "w") as handle:
        yaml.dump_all(info, handle, default_flow_style=False)
    table, read_info = read_picasso(path)
    assert read_info == info
    assert table["x_nm"].tolist() == pytest.approx([10.75 * 130, 0.5 * 130, 6.0 * 130])
    assert table["y_nm"].tolist() == pytest.approx([3.5 * 130, 2.5 * 130, 1.5 * 130])
    assert table["sigma_nm"].tolist() == pytest.approx([130, 143, 117], rel=1e-6)
    assert table["uncertainty_x_nm"].tolist() == pytest.approx([13, 26, 39], rel=1e-6)
    assert table["uncertainty_y_nm"].tolist() == pytest.approx([13, 32.5, 39], rel=1e-6)
    assert table["frames_on"].tolist() == [2, 1, 2]
    assert table["last_frame"].tolist() == [2, 1, 2]
    assert table["background"].tolist() == [10, 11, 12]


def test_metadata_embedded_only(tmp_path, table):
    path = write_picasso(tmp_path / "e.hdf5", table, 100.0)
    sidecar(path).unlink()
    back, info = read_picasso(path)
    assert info[-1]["Pixelsize"] == 100.0 and len(back) == len(table)


def test_nan_values_are_refused_and_nothing_is_written(tmp_path, table):
    table.loc[3, "uncertainty_nm"] = np.nan
    with pytest.raises(TableError, match="1 localization.*'uncertainty_nm'.*Picasso drops"):
        write_picasso(tmp_path / "n.hdf5", table, 100.0)
    assert list(tmp_path.iterdir()) == []


def test_bad_files(tmp_path, table):
    with pytest.raises(TableError, match="does not exist"):
        read_picasso(tmp_path / "missing.hdf5")
    (tmp_path / "text.hdf5").write_text("frame,x\n1,2\n")
    with pytest.raises(TableError, match="not a readable HDF5 file"):
        read_picasso(tmp_path / "text.hdf5")
    with h5py.File(tmp_path / "other.hdf5", "w") as handle:
        handle.create_dataset("identifications", data=np.zeros(3))
    with pytest.raises(TableError, match="no 'locs' dataset"):
        read_picasso(tmp_path / "other.hdf5")
    path = write_picasso(tmp_path / "p.hdf5", table, 100.0)
    sidecar(path).write_text("- Width: 3\n")
    with pytest.raises(TableError, match="no positive 'Pixelsize'"):
        read_picasso(path)
    with pytest.raises(PostprocessError, match="camera pixel size"):
        write_picasso(tmp_path / "q.hdf5", table, None)
