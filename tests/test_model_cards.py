"""Typed model cards: shipped cards parse, broken ones fail with the file and the field named."""

import json

import pytest

from napari_smlm_diffusion.model_cards import (
    CardError,
    WeightsError,
    check_pairing,
    parse_denoiser_card,
    parse_kde_cnn_card,
)
from napari_smlm_diffusion.pretrained import paired_kde_cnn, weights_dir


def shipped(name: str) -> dict:
    return json.loads((weights_dir() / f"{name}.json").read_text())


def test_shipped_cards_parse_and_pair():
    kde = parse_kde_cnn_card(shipped("kde_cnn"), "kde_cnn.json")
    denoiser = parse_denoiser_card(shipped("denoiser"), "denoiser.json")
    # the denoiser pairs with the shipped CNN it was trained on (the first release's, until it
    # is retrained on the new CNN's outputs)
    paired = paired_kde_cnn()
    check_pairing(denoiser, parse_kde_cnn_card(shipped(paired), f"{paired}.json"))
    fast = parse_kde_cnn_card(shipped("kde_cnn_fast"), "kde_cnn_fast.json")
    for card in (kde, fast, parse_kde_cnn_card(shipped("kde_cnn_v1"), "kde_cnn_v1.json")):
        assert card.upsampling == 4 and 0 < card.detection_threshold < 1
        low, high = card.training_ranges.psf_sigma_px
        assert 0 < low < high
    assert denoiser.prediction in ("eps", "v") and denoiser.schedule.type == "cosine"
    # the new CNN covers the ranges users have (issue: models for the microscopes users have)
    assert kde.training_ranges.psf_sigma_px == (0.7, 2.5)
    assert kde.training_ranges.pixel_size_nm == (50.0, 200.0)
    assert kde.training_ranges.photons == (100.0, 50000.0)
    # the fast network: the same ranges, half the width
    assert fast.training_ranges == kde.training_ranges
    assert shipped("kde_cnn_fast")["architecture"]["width"] == 16
    assert shipped("kde_cnn")["architecture"]["width"] == 32


@pytest.mark.parametrize("key", ["sha256", "detection_threshold", "training", "architecture"])
def test_missing_field_names_the_file_and_the_field(key):
    card = shipped("kde_cnn")
    del card[key]
    with pytest.raises(CardError, match=rf"my_cnn\.json: missing field '{key}'"):
        parse_kde_cnn_card(card, "my_cnn.json")


def test_unknown_prediction_is_refused_not_defaulted():
    card = shipped("denoiser")
    card["prediction"] = "x0"
    with pytest.raises(CardError, match="prediction must be one of"):
        parse_denoiser_card(card, "d.json")
    del card["prediction"]
    with pytest.raises(CardError, match="missing field 'prediction'"):
        parse_denoiser_card(card, "d.json")


def test_bad_training_range_is_refused():
    card = shipped("kde_cnn")
    card["training"]["photons"] = [5000, 100]
    with pytest.raises(CardError, match="training range 'photons'"):
        parse_kde_cnn_card(card, "c.json")


def test_denoiser_with_another_cnn_is_refused_naming_both_files():
    kde = parse_kde_cnn_card(dict(shipped("kde_cnn"), sha256="f" * 64), "custom_cnn.json")
    denoiser = parse_denoiser_card(shipped("denoiser"), "denoiser.json")
    with pytest.raises(WeightsError, match=r"denoiser\.json.*custom_cnn\.json"):
        check_pairing(denoiser, kde)


def test_posterior_engine_refuses_a_denoiser_trained_with_another_cnn(untrained_weights):
    from napari_smlm_diffusion.posterior import PosteriorEngine

    with pytest.raises(WeightsError, match=r"denoiser.*tiny\.json"):
        PosteriorEngine.load(str(untrained_weights), "denoiser", device="cpu")


def test_sampler_uses_the_schedule_of_the_card():
    from napari_smlm_diffusion.diffusion import inference_gammas

    default = inference_gammas(10)
    other = inference_gammas(10, (200, 0.02))
    assert default[-1] == other[-1] == pytest.approx(1.0)
    assert not pytest.approx(default[1:-1]) == other[1:-1]
