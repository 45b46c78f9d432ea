"""FRC of localizations split by frame blocks: resolution bounds and its dependence on noise."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.io import TableError
from napari_smlm_diffusion.metrics import frc_from_localizations
from napari_smlm_diffusion.postprocess import synthetic
from napari_smlm_diffusion.postprocess.common import PostprocessError
from napari_smlm_diffusion.postprocess.frc import frc_localizations


@pytest.fixture(scope="module")
def sites():
    return synthetic.structure_sites(4000.0, np.random.default_rng(8), "mixed")


def _locs(sites, precision, seed=0):
    return synthetic.sample_sites(sites, 2000, 40, precision, np.random.default_rng(seed))


def test_resolution_within_bounds_and_coarser_with_more_noise(sites):
    fine = frc_localizations(_locs(sites, 8.0), pixel_size_nm=4.0)
    coarse = frc_localizations(_locs(sites, 25.0), pixel_size_nm=4.0)
    # FRC resolution of point-like sites is a few times the localization precision
    assert 2 * 8.0 < fine.resolution_nm < 6 * 8.0
    assert 2 * 25.0 < coarse.resolution_nm < 6 * 25.0
    assert coarse.resolution_nm > 2 * fine.resolution_nm
    assert fine.frc[1] > 0.9 and np.nanmin(fine.frc) < 1 / 7
    assert fine.frequency.shape == fine.frc.shape


def test_agrees_with_the_metrics_resolution(sites):
    table = _locs(sites, 12.0)
    x0, y0 = table["x_nm"].min(), table["y_nm"].min()
    shifted = table.assign(x_nm=table["x_nm"] - x0, y_nm=table["y_nm"] - y0)
    side = max(shifted["x_nm"].max(), shifted["y_nm"].max())
    ours = frc_localizations(table, pixel_size_nm=5.0, block_size=50)
    theirs = frc_from_localizations(shifted, (side + 5.0, side + 5.0), 5.0, block_size=50)
    assert ours.resolution_nm == pytest.approx(theirs, rel=0.02)


def test_json_dict_has_the_resolution(sites):
    result = frc_localizations(_locs(sites, 10.0))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["resolution_nm"] == pytest.approx(result.resolution_nm)
    assert len(data["frc"]) == len(data["frequency_per_nm"])


def test_one_block_is_refused():
    table = pd.DataFrame({"frame": np.arange(10), "x_nm": np.arange(10.0), "y_nm": 1.0})
    with pytest.raises(PostprocessError, match="at least two blocks of 50 frames"):
        frc_localizations(table)
    assert math.isfinite(frc_localizations(table, block_size=1).pixel_size_nm)


@pytest.mark.parametrize(
    ("table", "message"),
    [(pd.DataFrame({"frame": [], "x_nm": [], "y_nm": []}), "empty"),
     (pd.DataFrame({"frame": [0, 60], "x_nm": [1.0, np.nan], "y_nm": [1.0, 2.0]}), "NaN")],
)
def test_bad_tables(table, message):
    with pytest.raises(TableError, match=message):
        frc_localizations(table)
