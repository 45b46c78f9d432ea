"""Adapt the models to one microscope: fine-tune on simulations matched to it, then recalibrate.

The generic models are trained over wide ranges; a user's setup is one point in them (or outside).
:func:`adapt_models` fine-tunes the shipped KDE CNN on simulations of that setup (its camera,
pixel size, PSF width, photons, background and density, with blinking fluorophores), then the
shipped denoiser on the residuals of the new CNN, then recalibrates the posterior's uncertainties
on matched validation regimes, and writes ``kde_cnn.safetensors`` and ``denoiser.safetensors``
with their model cards into one folder that ``--model`` accepts. Given frames of the user's own
stack, it last runs the label-free uncertainty check of the generic and the adapted pair on them
and lets it choose the adapted pair's uncertainty model (:mod:`.adapt_stack_check`). Every stage
resumes: training runs from their checkpoints, finished stages are skipped, and files are written
atomically.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .camera import Camera
from .errors import InputError
from .simulate import SimulationConfig
from .weights import DENOISER_NAME, KDE_CNN_NAME

if TYPE_CHECKING:  # training_data imports torch: loaded when needed (the CLI starts without it)
    from .adapt_stack_check import StackExcerpt
    from .training_data import KdeTrainingConfig

log = logging.getLogger(__name__)
ADAPT_DENSITY_FACTORS = (1 / 3, 1.0, 3.0)
MATCHED_SIZE = 48  # frame size (camera pixels) of the matched validation sets
SETUP_TOLERANCE = 0.02  # relative: a setup measured again this close resumes the same run
STATE_FILE = "adapt.json"
KDE_RUN, DENOISER_RUN = "kde-run", "denoiser-run"  # training runs' folders inside the model folder
SAMPLE_FRAMES = 64
DEFAULT_KDE_STEPS = 1000
DEFAULT_DENOISER_STEPS = 600
#: What the fine-tuned KDE CNN must improve on the matched validation sets to replace the generic
#: one (``train.SELECTION_TOLERANCE_NM``): "jaccard", molecules found (mean Jaccard index at
#: 100 nm, as the detection threshold is chosen), or "efficiency", molecules found and well
#: placed (mean efficiency at 250 nm, which also weighs the RMSE of every match).
OBJECTIVES = ("jaccard", "efficiency")
DEFAULT_OBJECTIVE = "jaccard"
#: Validation frames per matched condition, and the points of the objective by which the
#: fine-tuned KDE CNN must beat the generic one on them. Measured: the difference between the
#: generic and a fine-tuned CNN varies by about 1 point (standard deviation 0.6-1.0) from one such
#: validation set to another; with 8 frames a difference of 2-3 points could be noise.
VALIDATION_FRAMES = 32
FINE_TUNE_MARGIN = 1.0
REPLAY_FRACTION = 0.5  # share of training frames from the generic ranges (against forgetting)
MIN_LOCALIZATIONS = 20
THRESHOLD_FRAMES = 16
THRESHOLD_SEED = 830_000  # not used by training, the generic thresholds or the benchmarks
HELD_OUT_SEED = 840_000  # held-out frames that choose between refitted and generic uncertainty


@dataclass(frozen=True)
class Setup:
    """The microscope and sample to adapt to.

    Parameters
    ----------
    camera : Camera
        The user's camera (its pixel size included).
    psf_sigma_nm : float
        PSF standard deviation in nm.
    photons : float
        Typical photons per molecule per frame.
    background : float
        Typical background photons per pixel.
    density : float
        Typical density of active molecules per um^2.
    """

    camera: Camera
    psf_sigma_nm: float
    photons: float
    background: float
    density: float

    def __post_init__(self) -> None:
        for name in ("psf_sigma_nm", "photons", "background", "density"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"adapt: {name} must be > 0, got {value}")

    @property
    def psf_sigma_px(self) -> float:
        """PSF sigma in camera pixels."""
        return self.psf_sigma_nm / self.camera.pixel_size

    def simulation(self, size: int, density: float) -> SimulationConfig:
        """Filaments of blinking fluorophores on this setup at ``density``."""
        from .training_data import REALISTIC_BLINKING

        return SimulationConfig(size=(size, size), density=density,
                                photons=(self.photons / 1.5, self.photons * 1.5),
                                background=self.background, psf_sigma_px=self.psf_sigma_px,
                                camera=self.camera, layout="filaments",
                                blinking=REALISTIC_BLINKING)

    def to_dict(self) -> dict:
        """Plain dict for the model cards."""
        return {**asdict(self), "camera": self.camera.to_dict()}

    @classmethod
    def from_dict(cls, record: dict) -> Setup:
        """The setup of a :meth:`to_dict` record."""
        return cls(**{**record, "camera": Camera(**record["camera"])})

    def matches(self, record: dict) -> bool:
        """Whether ``record`` (:meth:`to_dict`) holds the same numbers to ``SETUP_TOLERANCE``:
        a stack measured again (after an upgrade, say) differs in the last digits."""
        def close(a: object, b: object) -> bool:
            if isinstance(a, dict) and isinstance(b, dict):
                return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
            return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(
                a, b, rel_tol=SETUP_TOLERANCE, abs_tol=1e-12)

        return close(self.to_dict(), record)


def molecules_of_stack(data, camera: Camera, psf_sigma_nm: float,
                       device: str = "auto") -> tuple[float, float] | None:
    """Median photons per molecule and density per um^2 from the shipped KDE CNN's localizations
    on up to ``SAMPLE_FRAMES`` frames spread over the stack, or None with fewer than
    ``MIN_LOCALIZATIONS``.

    The CNN separates molecules that crowd along a structure, where the inspection's aperture
    photometry counts a group of them as one spot (5.9x the photons of bright molecules on
    filaments at 1 per um^2, 1.7x with the CNN)."""
    import numpy as np

    from .inspection import job_sample
    from .pipeline import KdeEngine, run_kde

    sample = job_sample(data, range(len(data)), SAMPLE_FRAMES)
    table = run_kde(sample, camera, KdeEngine.load(device=device, notify=log.info),
                    psf_sigma_nm=psf_sigma_nm).localizations
    if len(table) < MIN_LOCALIZATIONS:
        return None
    rows, cols = sample.shape[-2:]
    area_um2 = rows * cols * (camera.pixel_size * 1e-3) ** 2
    return float(np.median(table["photons"])), len(table) / (len(sample) * area_um2)


def measure_setup(data, camera: Camera, psf_sigma_nm: float | None, photons: float | None = None,
                  background: float | None = None, density: float | None = None,
                  camera_known: bool = True,
                  report: Callable[[str], None] = log.info) -> Setup:
    """The :class:`Setup` of a stack: the values given are kept, the others measured.

    The background (and the PSF width when ``psf_sigma_nm`` is None) come from the inspection,
    which takes the camera as given when ``camera_known``; photons and density from the shipped
    KDE CNN's localizations (:func:`molecules_of_stack`), else from the inspection."""
    from .inspection import inspect_stack

    given = {"photons": photons, "background": background, "density": density}
    if all(value is not None for value in given.values()) and psf_sigma_nm is not None:
        return Setup(camera=camera, psf_sigma_nm=psf_sigma_nm, **given)
    inspected = inspect_stack(data, camera, camera_known=camera_known, psf_sigma_nm=psf_sigma_nm)
    sigma_nm = inspected.psf_sigma_nm if psf_sigma_nm is None else psf_sigma_nm
    measured = {"photons": inspected.photons_median,
                "background": inspected.background_median_photons,
                "density": inspected.density_per_um2}
    how = "the inspection"
    molecules = molecules_of_stack(data, camera, sigma_nm)
    if molecules is not None:
        measured["photons"], measured["density"] = molecules
        how = "the inspection (background) and the shipped KDE CNN's localizations"
    report(f"measured on the stack by {how}: photons {measured['photons']:.0f}, background "
           f"{measured['background']:.1f} /px, density {measured['density']:.2f} /um2, PSF "
           f"sigma {sigma_nm:.0f} nm")
    values = {key: measured[key] if value is None else value for key, value in given.items()}
    return Setup(camera=camera, psf_sigma_nm=sigma_nm, **values)


def matched_training(setup: Setup, steps: int, seed: int,
                     objective: str = DEFAULT_OBJECTIVE) -> KdeTrainingConfig:
    """Training data around the setup: its camera, pixel size and PSF (+-15 %), photons (x/2.5),
    background (x/1.5) and density (a third to five times: the density measured from the
    generic CNN's localizations undercounts crowded data, and the models should hold at three
    times the typical density), all layouts, mostly blinking; ``REPLAY_FRACTION`` of the frames
    come from the generic ranges, so that the fine-tuned model keeps what the generic one knew
    (crowded frames above all); ``objective`` (one of ``OBJECTIVES``) keeps the best weights,
    the generic ones unless beaten by ``FINE_TUNE_MARGIN``."""
    from .training_data import KdeTrainingConfig

    pixel = setup.camera.pixel_size
    return KdeTrainingConfig(
        steps=steps, learning_rate=2e-4, warmup_steps=min(50, steps), seed=seed,
        density=(setup.density / 3, setup.density * 5),
        photons=(setup.photons / 2.5, setup.photons * 2.5),
        background=(setup.background / 1.5, setup.background * 1.5),
        psf_sigma_px=(setup.psf_sigma_px * 0.85, setup.psf_sigma_px * 1.15),
        pixel_size_nm=(pixel, pixel), cameras=("EMCCD" if setup.camera.is_emccd else "sCMOS",),
        fixed_camera=setup.camera.to_dict(), validate_every=max(1, steps // 4),
        checkpoint_every=max(1, min(100, steps // 4)), validation_frames=VALIDATION_FRAMES,
        replay_fraction=REPLAY_FRACTION, selection=objective, fine_tune_margin=FINE_TUNE_MARGIN)


def matched_conditions(setup: Setup, size: int = MATCHED_SIZE) -> dict[str, SimulationConfig]:
    """Validation conditions: the setup at a third of, at, and at three times its density."""
    return {f"setup/d{setup.density * f:.3g}": setup.simulation(size, setup.density * f)
            for f in ADAPT_DENSITY_FACTORS}


class EtaReporter:
    """``progress(step, total)`` callback that logs the stage, step and estimated time left."""

    def __init__(self, stage: str, report: Callable[[str], None], every_s: float = 10.0):
        self.stage, self.report, self.every_s = stage, report, every_s
        self.started = self.last = time.monotonic()
        self.first_step: int | None = None

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if self.first_step is None:
            self.first_step, self.started = step, now
            return
        if now - self.last < self.every_s and step < total:
            return
        self.last = now
        rate = (now - self.started) / max(1, step - self.first_step)
        self.report(f"{self.stage}: step {step}/{total}, about {rate * (total - step) / 60:.1f} "
                    f"min left ({rate:.2f} s per step)")


def _state(out: Path) -> dict:
    path = out / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(out: Path, state: dict) -> None:
    from .io import atomic_write

    with atomic_write(out / STATE_FILE) as temporary:
        temporary.write_text(json.dumps(state, indent=1))


def _publish(best: Path, target: Path, extra: dict, report: Callable[[str], None]) -> None:
    """Copy a run's best weights to ``target`` with its card extended by ``extra``; say so when
    they are the starting (generic) weights, fine-tuning having beaten them nowhere."""
    from .io import atomic_write
    from .pretrained import load_verified_state, write_model_card

    _, card = load_verified_state(best)
    if card.get("step") == 0:
        report(f"fine-tuning did not improve the generic {card['name']} on the matched "
               "validation sets: the folder keeps the generic weights for it")
    with atomic_write(target) as temporary:
        shutil.copyfile(best, temporary)
    write_model_card(target, {**card, **extra})


def efficiency_advice(folder: Path, objective: str) -> str | None:
    """Advice for a user whose fine-tuned KDE CNN was turned down by Jaccard although it placed
    molecules better: the adapted ``folder`` kept the generic CNN (its card's step is 0), but a
    validation of the fine-tuning run scored a mean efficiency at 250 nm at least
    ``FINE_TUNE_MARGIN`` above the generic CNN's. None otherwise, and when the objective was
    already "efficiency".

    On crowded bright data fine-tuning places molecules better while it merges some of those
    that crowd along a structure (docs/benchmarks.md, "Why fine-tuning does not find more
    molecules"); which matters more is the user's choice."""
    from .pretrained import read_model_card
    from .training_log import LOG_NAME, training_log

    card = folder / f"{KDE_CNN_NAME}.json"
    if objective == "efficiency" or not card.is_file() or read_model_card(card).get("step") != 0:
        return None
    entries = [e for e in training_log(folder / KDE_RUN / LOG_NAME) if "mean_efficiency" in e]
    start = next((e for e in entries if e["step"] == 0), None)
    later = [e for e in entries if e["step"] > 0]
    if start is None or not later:
        return None
    best = max(later, key=lambda e: e["mean_efficiency"])
    if best["mean_efficiency"] < start["mean_efficiency"] + FINE_TUNE_MARGIN:
        return None
    return (f"the fine-tuned KDE CNN placed molecules better (mean efficiency at 250 nm "
            f"{best['mean_efficiency']:.1f} at step {best['step']}, generic "
            f"{start['mean_efficiency']:.1f}) but did not beat the generic CNN's mean Jaccard "
            f"at 100 nm by {FINE_TUNE_MARGIN:g} point ({best['mean_jaccard_100nm']:.1f} vs "
            f"{start['mean_jaccard_100nm']:.1f}), as the objective 'jaccard' requires; to keep "
            "such weights, adapt into a new folder with the objective 'efficiency'")


def _fit_adapted_threshold(setup: Setup, kde_target: Path, report: Callable[[str], None]
                           ) -> None:
    """Choose the adapted CNN's detection threshold as the generic CNN's table was chosen (best
    mean Jaccard index at 100 nm), on the matched validation conditions, and write it into its
    card as a one-width ``thresholds_by_psf`` table."""
    from .calibration.detection_thresholds import best_threshold, threshold_record
    from .pipeline import KdeEngine
    from .pretrained import load_verified_state, write_model_card

    engine = KdeEngine.load(str(kde_target), device="auto", notify=report)
    threshold, jaccard = best_threshold(engine.predict, matched_conditions(setup),
                                        THRESHOLD_FRAMES, THRESHOLD_SEED)
    report(f"adapted KDE CNN: detection threshold {threshold:g} (mean Jaccard at 100 nm "
           f"{jaccard:.1f} % on the matched conditions)")
    factors = ", ".join(f"{f:.3g}" for f in ADAPT_DENSITY_FACTORS)
    record = threshold_record([(setup.psf_sigma_px, threshold, jaccard)], THRESHOLD_FRAMES,
                              MATCHED_SIZE, "best mean Jaccard index at 100 nm on the setup at "
                              f"{factors} times its density", THRESHOLD_SEED)
    _, card = load_verified_state(kde_target)
    write_model_card(kde_target, {**card, "detection_threshold": threshold,
                                  "thresholds_by_psf": record})


def adapt_models(setup: Setup, out_dir: str | Path, kde_steps: int = DEFAULT_KDE_STEPS,
                 denoiser_steps: int = DEFAULT_DENOISER_STEPS, calibration_frames: int = 16,
                 seed: int = 0, objective: str = DEFAULT_OBJECTIVE,
                 report: Callable[[str], None] = log.info,
                 own_frames: StackExcerpt | None = None) -> Path:
    """Fine-tune both networks for ``setup`` and recalibrate; returns the model folder.

    The fine-tuned KDE CNN replaces the generic one only where it scores better by
    ``objective`` (one of ``OBJECTIVES``) on the matched validation sets. With ``own_frames``
    (consecutive frames of the user's stack) the label-free check of the generic and the adapted
    pair on them is reported and stored in the denoiser card's calibration record
    (``label_free_check_on_stack``), and it chooses the adapted pair's uncertainty model, refitted
    or generic (:func:`.adapt_stack_check.label_free_comparison`). Re-running with the same
    folder continues where the last run stopped.
    """
    from .calibration.validation_runs import Regime, calibrate, run_regimes
    from .posterior import PosteriorEngine
    from .posterior_settings import DEFAULT_POSTERIOR
    from .pretrained import load_verified_state, update_card, write_model_card
    from .train import DiffusionTrainingConfig, train_denoiser, train_kde_cnn

    if objective not in OBJECTIVES:
        raise InputError(f"adapt: objective must be one of {', '.join(OBJECTIVES)}, got "
                         f"{objective!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _state(out)
    started_with = state.get("objective", objective)
    if started_with != objective:
        raise InputError(f"{out} holds an adaptation started with the objective {started_with}: "
                         f"resume it with that objective, or choose a new folder")
    if "setup" in state:
        if not setup.matches(state["setup"]):
            raise InputError(f"{out} holds models adapted to another setup ({state['setup']}); "
                             "choose a new folder")
        setup = Setup.from_dict(state["setup"])  # resume with the numbers already trained on
    state["setup"], state["objective"] = setup.to_dict(), objective
    adapted = {"adapted_to": setup.to_dict(), "adapt_objective": objective}
    kde_target, denoiser_target = out / f"{KDE_CNN_NAME}.safetensors", \
        out / f"{DENOISER_NAME}.safetensors"
    if not state.get("kde_done"):
        config = matched_training(setup, kde_steps, seed, objective)
        best = train_kde_cnn(out / KDE_RUN, config, resume=True, log=report,
                             validation=matched_conditions(setup),
                             progress=EtaReporter("KDE CNN", report))
        _publish(best, kde_target, adapted, report)
        advice = efficiency_advice(out, objective)
        if advice is not None:
            report(advice)
        state["kde_done"] = True
        _save_state(out, state)
    if not state.get("thresholds_done"):
        _fit_adapted_threshold(setup, kde_target, report)
        state["thresholds_done"] = True
        _save_state(out, state)
    if not state.get("denoiser_done"):
        kde_config = replace(matched_training(setup, denoiser_steps, seed), frame_size=32)
        config = DiffusionTrainingConfig(steps=denoiser_steps, learning_rate=2e-4,
                                         warmup_steps=min(50, denoiser_steps),
                                         validate_every=max(1, denoiser_steps // 4),
                                         checkpoint_every=max(1, min(100, denoiser_steps // 4)),
                                         seed=seed, kde=kde_config)
        best = train_denoiser(out / DENOISER_RUN, config, resume=True, log=report,
                              kde_weights=kde_target,
                              progress=EtaReporter("denoiser", report))
        _publish(best, denoiser_target, adapted, report)
        state["denoiser_done"] = True
        _save_state(out, state)
    if not state.get("calibrated"):
        report("calibrating the posterior on the matched regimes")
        engine = PosteriorEngine.load(str(kde_target), str(denoiser_target), device="auto",
                                      notify=report)
        regimes = [Regime(name, config, index) for index, (name, config)
                   in enumerate(matched_conditions(setup).items())]
        runs = run_regimes(engine, regimes, calibration_frames, DEFAULT_POSTERIOR, seed=800_000,
                           progress=report)
        record = _guarded_uncertainty_model(engine, regimes, calibration_frames,
                                            calibrate(engine, runs), report)
        _, card = load_verified_state(denoiser_target)
        write_model_card(denoiser_target, update_card(card, calibration=record))
        state["calibrated"] = True
        _save_state(out, state)
    if own_frames is not None and not state.get("checked_on_stack"):
        from .adapt_stack_check import label_free_comparison

        _, card = load_verified_state(denoiser_target)
        calibration = card["calibration"]
        choice = calibration.get("uncertainty_model_choice", {})
        candidates = {"generic": load_verified_state(DENOISER_NAME)[1]["uncertainty_model"]}
        if "refitted_model" in choice or choice.get("chosen", "refitted") == "refitted":
            candidates["refitted"] = choice.get("refitted_model", calibration["uncertainty_model"])
        check = label_free_comparison(own_frames, setup, kde_target, denoiser_target, candidates,
                                      choice.get("chosen", "refitted"), report)
        write_model_card(denoiser_target, update_card(card, calibration=calibration | {
            "uncertainty_model": candidates[check["uncertainty_model"]["chosen"]],
            "label_free_check_on_stack": check}))
        state["checked_on_stack"] = True
        _save_state(out, state)
    report(f"adapted models in {out}: {kde_target.name}, {denoiser_target.name}")
    return out


def _guarded_uncertainty_model(engine, regimes, frames: int, record: dict,
                               report: Callable[[str], None]) -> dict:
    """The calibration ``record`` of the adapted pair, its per-molecule uncertainty model
    replaced by the shipped denoiser's when the refit does not have the lower mean negative
    log-likelihood on held-out matched frames (a refit on a few frames per regime can be
    worse than the generic model fitted on all regimes). The choice, both scores and the
    chosen model's RMS of error / sigma per held-out regime go into the record."""
    from .calibration.validation_runs import (
        matched_molecules,
        mean_nll,
        molecule_arrays,
        molecule_diagnostics,
        run_regimes,
    )
    from .posterior_settings import DEFAULT_POSTERIOR
    from .pretrained import load_verified_state

    generic = load_verified_state(DENOISER_NAME)[1]["uncertainty_model"]
    held_out = run_regimes(engine, regimes, frames, DEFAULT_POSTERIOR, seed=HELD_OUT_SEED,
                           progress=report)
    molecules = [molecule_arrays(matched_molecules(run, engine,
                                                   record["posterior_mean_threshold"]))
                 for run in held_out]
    scores = {"refitted": mean_nll(record["uncertainty_model"], molecules),
              "generic": mean_nll(generic, molecules)}
    chosen = "refitted" if scores["refitted"] < scores["generic"] else "generic"
    model = record["uncertainty_model"] if chosen == "refitted" else generic
    report(f"uncertainty model: {chosen} (held-out mean NLL refitted {scores['refitted']:.4f}, "
           f"generic {scores['generic']:.4f})")
    return record | {"uncertainty_model": model, "uncertainty_model_choice": {
        "chosen": chosen, "refitted_model": record["uncertainty_model"],
        "held_out_seed": HELD_OUT_SEED,
        "held_out_mean_nll": {k: v if math.isfinite(v) else None for k, v in scores.items()},
        "frames_per_regime": frames,
        "held_out_regimes": {run.regime.name: molecule_diagnostics(model, m)
                             for run, m in zip(held_out, molecules, strict=True)}}}
