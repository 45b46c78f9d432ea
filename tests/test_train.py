"""Training loops: they learn, checkpoint, resume exactly, and write verified weights."""

import json

import torch

from napari_smlm_diffusion.pretrained import load_denoiser, load_kde_cnn
from napari_smlm_diffusion.train import (
    DiffusionTrainingConfig,
    KdeTrainingConfig,
    train_denoiser,
    train_kde_cnn,
)

TINY_CNN = {"width": 8, "dilations": [1, 2], "up_channels": [4, 2]}
TINY_DENOISER = {"channels": [8, 8, 8], "embed_dim": 8}


def kde_config(steps: int) -> KdeTrainingConfig:
    return KdeTrainingConfig(steps=steps, batch_size=2, frame_size=16, warmup_steps=1,
                             checkpoint_every=2, validate_every=2, validation_frames=1,
                             architecture=TINY_CNN)


def test_kde_training_resumes_exactly_where_it_stopped(tmp_path):
    straight = tmp_path / "straight"
    train_kde_cnn(straight, kde_config(4), log=lambda _: None)
    interrupted = tmp_path / "interrupted"
    train_kde_cnn(interrupted, kde_config(2), log=lambda _: None)
    train_kde_cnn(interrupted, kde_config(4), resume=True, log=lambda _: None)
    a = json.loads((straight / "checkpoint.json").read_text())
    b = json.loads((interrupted / "checkpoint.json").read_text())
    assert a["step"] == b["step"] == 4
    model_a, card = load_kde_cnn(straight / "best.safetensors")
    assert card.detection_threshold > 0 and card.architecture == TINY_CNN
    from safetensors.torch import load_file

    state_a = load_file(str(straight / "checkpoint.safetensors"))
    state_b = load_file(str(interrupted / "checkpoint.safetensors"))
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-4, atol=1e-6)
    lines = (straight / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "loss" in json.loads(lines[0])


def test_denoiser_training_resumes_exactly_where_it_stopped(tmp_path, untrained_weights):
    def config(steps: int) -> DiffusionTrainingConfig:
        return DiffusionTrainingConfig(steps=steps, batch_size=2, frame_size=16, warmup_steps=1,
                                       checkpoint_every=2, validate_every=2,
                                       validation_frames=1, architecture=TINY_DENOISER)

    def run(path, steps, resume=False):
        train_denoiser(path, config(steps), resume=resume, log=lambda _: None,
                       kde_weights=untrained_weights)

    run(tmp_path / "straight", 4)
    run(tmp_path / "interrupted", 2)
    run(tmp_path / "interrupted", 4, resume=True)
    from safetensors.torch import load_file

    state_a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    state_b = load_file(str(tmp_path / "interrupted" / "checkpoint.safetensors"))
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-4, atol=1e-6)


def test_denoiser_training_writes_a_verified_model_card(tmp_path, untrained_weights):
    config = DiffusionTrainingConfig(steps=2, batch_size=2, frame_size=16, warmup_steps=1,
                                     checkpoint_every=1, validate_every=2, validation_frames=1,
                                     architecture=TINY_DENOISER)
    best = train_denoiser(tmp_path / "run", config, log=lambda _: None,
                          kde_weights=untrained_weights)
    model, card = load_denoiser(best)
    assert card.raw["schedule"]["final_gamma"] < 1e-3
    assert card.raw["validation"]["validation_loss"] > 0
    assert sum(p.numel() for p in model.parameters()) > 0


def test_replayed_frames_come_from_the_generic_ranges_not_the_matched_ones():
    from dataclasses import replace

    from napari_smlm_diffusion.training_data import KdeTrainingConfig, training_batch

    dim = KdeTrainingConfig(batch_size=3, frame_size=16, photons=(200.0, 300.0),
                            pixel_size_nm=(65.0, 65.0), psf_sigma_px=(1.9, 1.9))
    bright = replace(dim, photons=(20000.0, 30000.0), background=(250.0, 250.0))
    # Without replay the matched ranges shape every frame ...
    assert not torch.equal(training_batch(dim, 3)[0], training_batch(bright, 3)[0])
    # ... with full replay none does: both draw the same frames from the generic ranges.
    full_dim, full_bright = (replace(c, replay_fraction=1.0) for c in (dim, bright))
    for a, b in zip(training_batch(full_dim, 3), training_batch(full_bright, 3), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(training_batch(full_dim, 3)[0], training_batch(dim, 3)[0])


def test_target_kernel_width_is_the_configured_one_in_matched_and_replayed_frames():
    """The same molecules rendered with a narrower kernel: the frames are equal, and every
    target's integral scales with the kernel's area (peak height 1 per molecule)."""
    from dataclasses import replace

    from napari_smlm_diffusion.training_data import KdeTrainingConfig, training_batch

    for replay in (0.0, 1.0):
        wide = KdeTrainingConfig(batch_size=3, frame_size=32, density=(2.0, 2.0),
                                 replay_fraction=replay, kde_min_snr=0.0)
        narrow = replace(wide, kde_sigma_px=0.7)
        (frames_wide, targets_wide), (frames_narrow, targets_narrow) = (
            training_batch(c, 5) for c in (wide, narrow))
        assert torch.equal(frames_wide, frames_narrow)
        ratio = targets_narrow.sum(dim=(1, 2, 3)) / targets_wide.sum(dim=(1, 2, 3))
        assert torch.allclose(ratio, torch.full_like(ratio, 0.49), rtol=0.03)
        assert float(targets_narrow.max()) <= float(targets_wide.max())


def scale_task(validation_target: float, margin: float = 0.0):
    """Fine-tuning a single number from 0 (the "shipped" value): training pulls it to 5, the
    validation score is -|value - validation_target|."""
    from napari_smlm_diffusion.train import TrainingTask

    class Scale(torch.nn.Module):
        config = {"kind": "scale"}

        def __init__(self, value: float):
            super().__init__()
            self.value = torch.nn.Parameter(torch.tensor([value]))

    config = KdeTrainingConfig(steps=4, warmup_steps=1, checkpoint_every=2, validate_every=2,
                               learning_rate=0.1)
    return TrainingTask(
        name="scale", model=Scale(0.0), config=config, batch=lambda step: (),
        loss=lambda m, batch: (m.value - 5.0).pow(2).sum(),
        validate=lambda m: {"score": -abs(float(m.value.detach()) - validation_target)},
        card=lambda report: {}, load_shipped=lambda: Scale(0.0), fine_tune_margin=margin)


def test_fine_tuning_keeps_the_starting_weights_when_training_only_makes_them_worse(tmp_path):
    from napari_smlm_diffusion.train import run_training

    best = run_training(scale_task(validation_target=0.0), tmp_path / "run", resume=True,
                        log=lambda _: None)
    card = json.loads(best.with_suffix(".json").read_text())
    assert card["step"] == 0 and card["validation"]["score"] == 0.0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/log.jsonl").open()]
    assert steps == [0, 2, 4]


def test_fine_tuning_must_beat_the_starting_weights_by_the_margin(tmp_path):
    """Training moves towards what validation wants (5): a gain within the margin keeps the
    starting weights, a larger margin-free gain replaces them."""
    from napari_smlm_diffusion.train import run_training

    def kept_step(margin: float, folder: str) -> int:
        best = run_training(scale_task(validation_target=5.0, margin=margin), tmp_path / folder,
                            resume=True, log=lambda _: None)
        return json.loads(best.with_suffix(".json").read_text())["step"]

    assert kept_step(0.0, "no-margin") == 4
    assert kept_step(10.0, "margin") == 0


def test_kde_validation_keeps_what_the_chosen_objective_rewards():
    """Jaccard selection (adapt's default) picks the threshold that finds the most molecules
    within 100 nm; efficiency selection the one that also places them best."""
    import pytest

    from napari_smlm_diffusion.train import validate_kde_cnn
    from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS, validation_set

    conditions = {f"bright/d{d:g}": MICROSCOPE_CORNERS["bright/130nm/bg250"].config(32, d)
                  for d in (0.3, 3.0)}
    data = validation_set(2, conditions=conditions)
    model = load_kde_cnn("kde_cnn")[0].eval()
    by_jaccard = validate_kde_cnn(model, data, "jaccard")
    by_efficiency = validate_kde_cnn(model, data, "efficiency")
    assert by_jaccard["score"] == by_jaccard["mean_jaccard_100nm"] > 0
    assert by_efficiency["score"] == by_efficiency["mean_efficiency"]
    assert by_jaccard["mean_jaccard_100nm"] >= by_efficiency["mean_jaccard_100nm"]
    assert by_efficiency["mean_efficiency"] >= by_jaccard["mean_efficiency"]
    assert set(by_jaccard["per_condition"]) == set(conditions)
    with pytest.raises(ValueError, match="selection must be one of"):
        validate_kde_cnn(model, data, "recall")


def test_kde_validation_reaches_the_lowest_detection_threshold():
    """A wide PSF behind small pixels (dim, 65 nm, 1.9 px) needs the lowest threshold of the
    cards' table (0.05); a validation that could not pick it would favour any fine-tuned CNN
    with higher peaks over the generic one."""
    from napari_smlm_diffusion.calibration.detection_thresholds import CANDIDATES
    from napari_smlm_diffusion.train import validate_kde_cnn
    from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS, validation_set

    conditions = {f"dim/d{d:g}": MICROSCOPE_CORNERS["dim/65nm/psf1.9"].config(32, d)
                  for d in (0.3, 3.0)}
    report = validate_kde_cnn(load_kde_cnn("kde_cnn")[0].eval(),
                              validation_set(2, size=32, conditions=conditions), "jaccard")
    assert report["threshold"] == min(CANDIDATES) == 0.05


def test_train_kde_command_trains_a_narrower_network_from_scratch(tmp_path, capsys):
    """`train-kde --width 8 --resume` in a fresh folder: the shipped weights (width 32) cannot
    start it, so it trains from scratch, and the card describes the network it holds."""
    from napari_smlm_diffusion.cli import main

    out = tmp_path / "slim"
    main(["train-kde", str(out), "--steps", "1", "--batch-size", "1", "--width", "8",
          "--up-channels", "4", "2", "--resume"])
    assert "best weights" in capsys.readouterr().out
    model, card = load_kde_cnn(str(out / "best.safetensors"))
    assert card.raw["architecture"]["width"] == 8
    assert card.raw["architecture"]["up_channels"] == [4, 2]
    assert card.raw["origin"] == "scratch" and model.stem[0].out_channels == 8
