"""The smlm-diffusion command: simulate, evaluate, help text and errors."""

import json

import numpy as np
import pytest

from napari_smlm_diffusion.cli import build_parser, main
from napari_smlm_diffusion.io import open_stack, read_localizations


@pytest.fixture
def simulated(tmp_path):
    out = tmp_path / "sim"
    code = main(["simulate", str(out), "--frames", "5", "--size", "32", "--density", "2",
                 "--seed", "4", "--camera", "EMCCD", "--layout", "rings"])
    assert code == 0
    return out


def test_simulate_writes_stack_with_pixel_size_and_truth(simulated):
    with open_stack(simulated / "stack.tif") as stack:
        assert stack.data.shape == (5, 32, 32)
        assert stack.data.dtype == np.uint16
        assert stack.pixel_size_nm == pytest.approx(160.0)
        assert stack.metadata["em_gain"] == pytest.approx(100.0)
    truth = read_localizations(simulated / "truth.csv")
    assert len(truth) > 0
    assert truth["frame"].between(0, 4).all()
    header = (simulated / "truth.csv").read_text().splitlines()[0]
    assert header.startswith('"id","frame","x [nm]","y [nm]"')


def test_evaluate_truth_against_itself_is_perfect(simulated, capsys):
    truth = str(simulated / "truth.csv")
    assert main(["evaluate", truth, truth, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["jaccard"] == pytest.approx(100.0)
    assert result["rmse_lateral_nm"] == pytest.approx(0.0, abs=1e-6)
    assert result["efficiency"] == pytest.approx(100.0)


def test_evaluate_missing_file_is_one_line_error(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "nope.csv"), str(tmp_path / "nope.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "nope.csv" in err


def test_bad_option_value_exits_non_zero(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(tmp_path), "--frames", "0"])
    assert exit_info.value.code == 2


def test_help_states_units():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    text = sub["simulate"].format_help()
    for unit in ("nm", "um^2", "photons", "pixels"):
        assert unit in text
