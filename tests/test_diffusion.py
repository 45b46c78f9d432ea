"""Diffusion mathematics: schedule, samplers against an exact score, streaming moments."""

import numpy as np
import pytest
import torch

from card_helpers import uncalibrated_eps_card
from napari_smlm_diffusion.diffusion import (
    SAMPLERS,
    RunningMoments,
    cosine_gammas,
    diffusion_loss,
    inference_gammas,
    sample_training_gamma,
)


def gaussian_eps(mu: float, s: float, prediction: str = "eps"):
    """Exact noise (or velocity) predictor for data ~ N(mu, s^2), so that the samplers can be
    checked exactly."""

    def model(y, log_snr):
        gamma = torch.sigmoid(log_snr)[:, None, None, None]
        eps = (1 - gamma).sqrt() * (y - gamma.sqrt() * mu) / (gamma * s * s + 1 - gamma)
        if prediction == "eps":
            return eps
        x0 = (y - (1 - gamma).sqrt() * eps) / gamma.sqrt()
        return gamma.sqrt() * eps - (1 - gamma).sqrt() * x0

    return model


def test_schedule_ends_in_pure_noise():
    gammas = cosine_gammas()
    assert gammas[0] == 1.0 and gammas[-1] < 1e-3
    assert np.all(np.diff(gammas) < 0)
    steps = inference_gammas(10)
    assert steps[0] == pytest.approx(gammas[-1]) and steps[-1] == pytest.approx(1.0)


def test_training_gamma_covers_the_schedule():
    gamma = sample_training_gamma(20000, torch.Generator().manual_seed(0))
    assert gamma.min() >= 0 and gamma.max() <= 1
    assert abs(float((gamma < 0.5).float().mean()) - 0.5) < 0.1


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("sampler, steps, tolerance", [("dpm-solver", 20, 0.05),
                                                        ("ddim", 100, 0.05),
                                                        ("ddpm", 100, 0.06)])
def test_sampler_reproduces_gaussian_moments(sampler, steps, tolerance, prediction):
    mu, s = 0.7, 0.3
    out = SAMPLERS[sampler](gaussian_eps(mu, s, prediction), (20000, 1, 1, 1),
                            torch.Generator().manual_seed(1), torch.device("cpu"), steps=steps,
                            prediction=prediction)
    assert float(out.mean()) == pytest.approx(mu, abs=0.01)
    assert float(out.std()) == pytest.approx(s, rel=tolerance)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_samples_respect_bounds(sampler):
    """A KDE is never negative: with bounds, no sample leaves them even where the data model
    puts half of its mass outside."""
    low, high = torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0)
    out = SAMPLERS[sampler](gaussian_eps(0.0, 1.0, "v"), (4000, 1, 1, 1),
                            torch.Generator().manual_seed(4), torch.device("cpu"), steps=20,
                            prediction="v", bounds=(low, high))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 2.0
    assert float((out > 0.05).float().mean()) > 0.3  # clipping does not collapse everything


def test_snr_weighted_loss_does_not_depend_on_the_parametrisation():
    """With SNR-clipped weights the loss is a weighted data error: the same (wrong) predictor
    written as eps or as v has the same loss."""
    y0 = 0.7 + 0.3 * torch.randn(2000, 1, 1, 1, generator=torch.Generator().manual_seed(2))
    losses = [diffusion_loss(gaussian_eps(-0.5, 1.0, p), y0, torch.Generator().manual_seed(3),
                             prediction=p, snr_clip=(1.0, 5.0)) for p in ("eps", "v")]
    assert float(losses[0]) == pytest.approx(float(losses[1]), rel=1e-3)


def test_v_loss_is_zero_for_the_exact_velocity():
    y0 = torch.full((500, 1, 1, 1), 0.7)
    exact = diffusion_loss(gaussian_eps(0.7, 1e-4, "v"), y0, torch.Generator().manual_seed(3),
                           prediction="v")
    assert float(exact) < 1e-4


def test_seeded_sampling_reproduces_bit_for_bit():
    model = gaussian_eps(0.0, 1.0)
    a = SAMPLERS["ddpm"](model, (3, 1, 4, 4), torch.Generator().manual_seed(5),
                         torch.device("cpu"), steps=10)
    b = SAMPLERS["ddpm"](model, (3, 1, 4, 4), torch.Generator().manual_seed(5),
                         torch.device("cpu"), steps=10)
    assert torch.equal(a, b)


def test_exact_model_has_lower_loss_than_a_wrong_one():
    y0 = 0.7 + 0.3 * torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(2))
    exact = diffusion_loss(gaussian_eps(0.7, 0.3), y0, torch.Generator().manual_seed(3))
    wrong = diffusion_loss(gaussian_eps(-0.5, 1.0), y0, torch.Generator().manual_seed(3))
    assert float(exact) < float(wrong)
    assert float(exact) < 1.0


def test_welford_equals_two_pass():
    rng = np.random.default_rng(0)
    samples = rng.normal(3.0, 2.0, (50, 8, 9))
    moments = RunningMoments()
    for sample in samples:
        moments.add(sample)
    np.testing.assert_allclose(moments.mean, samples.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.variance, samples.var(axis=0, ddof=1), rtol=1e-10)
    single = RunningMoments()
    single.add(samples[0])
    assert np.all(single.variance == 0)
    with pytest.raises(ValueError):
        _ = RunningMoments().variance


class GaussianPosteriorDenoiser(torch.nn.Module):
    """Exact noise predictor for a residual posterior per pixel: exactly 0 on the left half of the
    frame, and N(1, 0.5^2) in KDE units on the right half (well inside the KDE's bounds): a
    synthetic case whose samples agree on the left and differ on the right."""

    def forward(self, y_t, y_hat, frame, log_snr):
        spread, centre = torch.zeros_like(y_t), torch.zeros_like(y_t)
        spread[..., spread.shape[-1] // 2:] = 0.5 * 2.0  # in residual units (RESIDUAL_SCALE)
        centre[..., centre.shape[-1] // 2:] = 1.0 * 2.0
        gamma = torch.sigmoid(log_snr)[:, None, None, None]
        return (1 - gamma).sqrt() * (y_t - gamma.sqrt() * centre) / (gamma * spread**2 + 1 - gamma)


def test_posterior_variance_zero_where_samples_agree(untrained_weights):
    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.pipeline import KdeEngine
    from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
    from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

    frame = simulate_stack(1, SimulationConfig(size=(12, 16)), seed=0).frames[0]
    engine = PosteriorEngine(KdeEngine.load(str(untrained_weights), device="cpu"),
                             GaussianPosteriorDenoiser(), uncalibrated_eps_card())
    settings = PosteriorSettings(samples=64, steps=20, sampler="dpm-solver", keep_samples=2)
    result = engine.sample_frame(frame, 0, preset("sCMOS"), settings, threshold=0.3)
    assert result.kept.shape == (2, 48, 64)
    left, right = result.variance[:, :32], result.variance[:, 32:]
    assert np.abs(left).max() < 1e-8
    assert np.sqrt(right.mean()) == pytest.approx(0.5, rel=0.1)
    np.testing.assert_allclose(result.mean[:, :32], result.y_hat[:, :32], atol=1e-5)
    again = engine.sample_frame(frame, 0, preset("sCMOS"), settings, threshold=0.3)
    np.testing.assert_array_equal(again.kept, result.kept)


def test_per_molecule_spread_pairs_each_sample_peak_once():
    import pandas as pd

    from napari_smlm_diffusion.posterior import posterior_uncertainty, reported_uncertainty

    mean = pd.DataFrame({"x_nm": [100.0, 160.0], "y_nm": [100.0, 100.0],
                         "uncertainty_x_nm": [3.0, 4.0], "uncertainty_y_nm": [3.0, 4.0]})
    xs_a = [95.0, 105.0, 98.0]  # molecule a in three samples; molecule b only in the first two
    samples = [pd.DataFrame({"x_nm": [xs_a[0], 150.0], "y_nm": [100.0, 104.0]}),
               pd.DataFrame({"x_nm": [xs_a[1], 170.0], "y_nm": [100.0, 96.0]}),
               pd.DataFrame({"x_nm": [xs_a[2]], "y_nm": [100.0]}),
               pd.DataFrame({"x_nm": [], "y_nm": []})]
    table = posterior_uncertainty(mean, samples, radius_nm=100.0)
    # Nearest-peak lookup would give b the peak of a in the third sample; one-to-one does not.
    np.testing.assert_allclose(table["detection_probability"], [0.75, 0.5])
    np.testing.assert_allclose(table["posterior_std_x_nm"], [np.std(xs_a, ddof=1),
                                                              np.std([150, 170], ddof=1)])
    np.testing.assert_allclose(table["posterior_std_y_nm"], [0.0, np.std([104, 96], ddof=1)])
    lone = posterior_uncertainty(mean.iloc[:1], samples[2:], radius_nm=100.0)
    assert np.isnan(lone["posterior_std_x_nm"][0])  # seen in one sample: no spread

    model = {"spread_weight": 4.0, "crlb_weight": 3.0}
    reported = reported_uncertainty(table, model)
    expected_x = 2.0 * np.hypot(table["posterior_std_x_nm"], [3.0, 4.0])  # crlb^2 (1 + 3)
    np.testing.assert_allclose(reported["uncertainty_x_nm"], expected_x)
    np.testing.assert_allclose(reported["crlb_x_nm"], [3.0, 4.0])
    plain = reported_uncertainty(table, {})  # uncalibrated: spread and CRLB in quadrature
    np.testing.assert_allclose(plain["uncertainty_x_nm"],
                               np.hypot(table["posterior_std_x_nm"], [3.0, 4.0]))
    with pytest.raises(ValueError, match="uncertainty_model keys.*'scale'"):
        reported_uncertainty(table, {"scale": 2.0})


class DeviceAgnosticDenoiser(GaussianPosteriorDenoiser):
    """The Gaussian denoiser with a parameter and a ``to`` that stays on the CPU, so that a test
    can pretend the engine runs on a GPU."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def to(self, *args, **kwargs):
        return self


@pytest.mark.parametrize(("capacity", "messages", "device"), [
    (2, ["out of cuda memory in the diffusion model: retrying with 2 samples at a time"], "cuda"),
    (0, ["out of cuda memory in the diffusion model: retrying with 2 samples at a time",
         "out of cuda memory in the diffusion model: retrying with 1 sample at a time",
         "out of cuda memory in the diffusion model even for one sample: continuing on the CPU"],
     "cpu"),
])
def test_gpu_out_of_memory_in_the_denoiser_gives_the_same_samples(untrained_weights, monkeypatch,
                                                                  capacity, messages, device):
    """A (pretended) GPU that holds ``capacity`` samples: smaller sample batches, then the CPU,
    each said once, and the samples are those of an all-in-one batch on the CPU."""
    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.pipeline import KdeEngine
    from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings
    from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

    frame = simulate_stack(1, SimulationConfig(size=(12, 16)), seed=0).frames[0]
    settings = PosteriorSettings(samples=4, steps=5, keep_samples=4)
    card = uncalibrated_eps_card()
    reference = PosteriorEngine(KdeEngine.load(str(untrained_weights), device="cpu"),
                                DeviceAgnosticDenoiser(), card).sample_frame(
        frame, 0, preset("sCMOS"), settings, threshold=0.3)

    notes = []
    engine = PosteriorEngine(KdeEngine.load(str(untrained_weights), device="cpu",
                                            notify=notes.append), DeviceAgnosticDenoiser(), card)
    engine.kde.device = torch.device("cuda")  # pretend; the networks still compute on the CPU
    cpu_predict, cpu_residuals = KdeEngine.predict, PosteriorEngine._residuals
    monkeypatch.setattr(KdeEngine, "predict", lambda self, frames, camera: cpu_predict(
        KdeEngine(self.model, self.card, torch.device("cpu"), self.notify), frames, camera))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def residuals(self, frame, y_hat, generators, *args):
        if self.device.type == "cuda" and len(generators) > capacity:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")
        on_cpu = PosteriorEngine(KdeEngine(self.kde.model, self.kde.card, torch.device("cpu")),
                                 self.denoiser, self.card)
        return cpu_residuals(on_cpu, frame, y_hat, generators, *args)

    monkeypatch.setattr(PosteriorEngine, "_residuals", residuals)
    for _ in range(2):  # the second frame starts with the batch that fitted: nothing more said
        result = engine.sample_frame(frame, 0, preset("sCMOS"), settings, threshold=0.3)
    assert notes == messages
    assert engine.device.type == device
    np.testing.assert_allclose(result.kept, reference.kept, atol=1e-6)


def test_posterior_refuses_frames_outside_the_stack(untrained_weights):
    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.pipeline import KdeEngine
    from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, run_posterior

    engine = PosteriorEngine(KdeEngine.load(str(untrained_weights), device="cpu"),
                             GaussianPosteriorDenoiser(), uncalibrated_eps_card())
    stack = np.full((3, 16, 16), 100, np.uint16)
    with pytest.raises(ValueError, match="frames 3-4 lie outside the stack: it has frames 1-3"):
        run_posterior(stack, preset("sCMOS"), engine, range(2, 4), PosteriorSettings())


def test_cancel_takes_effect_within_one_network_evaluation(untrained_weights):
    from napari_smlm_diffusion.camera import preset
    from napari_smlm_diffusion.devices import Cancelled
    from napari_smlm_diffusion.pipeline import KdeEngine
    from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, run_posterior

    evaluations = []

    class CountingDenoiser(GaussianPosteriorDenoiser):
        def forward(self, *args):
            evaluations.append(1)
            return super().forward(*args)

    engine = PosteriorEngine(KdeEngine.load(str(untrained_weights), device="cpu"),
                             CountingDenoiser(), uncalibrated_eps_card())
    answers = iter([False, False, True])  # before the frame, after evaluation 1, after 2
    stack = np.full((2, 16, 16), 110, np.uint16)
    with pytest.raises(Cancelled):
        run_posterior(stack, preset("sCMOS"), engine, range(2),
                      PosteriorSettings(samples=2, steps=50), should_stop=lambda: next(answers))
    assert len(evaluations) == 2


def test_sampler_names_match_the_samplers():
    from napari_smlm_diffusion.posterior_settings import SAMPLER_NAMES

    assert sorted(SAMPLER_NAMES) == sorted(SAMPLERS)


def test_recalibration_grows_with_the_local_density_and_never_undercuts_the_crlb():
    import pandas as pd

    from napari_smlm_diffusion.posterior import local_density, reported_uncertainty

    # two molecules 500 nm apart and one alone 5 um away: 2 and 1 molecules within 1 um
    table = pd.DataFrame({"x_nm": [0.0, 500.0, 5000.0], "y_nm": [0.0, 0.0, 0.0],
                          "uncertainty_x_nm": [1.0] * 3, "uncertainty_y_nm": [1.0] * 3,
                          "posterior_std_x_nm": [10.0] * 3, "posterior_std_y_nm": [10.0] * 3})
    per_um2 = np.array([2, 2, 1]) / np.pi
    np.testing.assert_allclose(local_density(table), per_um2)
    model = {"spread_weight": 2.25, "floor_nm": 5.0, "crowding_exponent": 1.0}
    reported = reported_uncertainty(table, model)
    np.testing.assert_allclose(reported["uncertainty_x_nm"],
                               np.sqrt(1.0 + (2.25 * 10.0**2 + 5.0**2) * (1 + per_um2)))
    np.testing.assert_allclose(reported["local_density_um2"], per_um2)
    # a molecule seen in fewer than 2 samples has no spread: the floor and the CRLB remain
    lone = table.assign(posterior_std_x_nm=[np.nan, 10.0, 10.0])
    floor_only = reported_uncertainty(lone, {"floor_nm": 5.0, "spread_weight": 0.0})
    assert floor_only["uncertainty_x_nm"][0] == pytest.approx(np.hypot(5.0, 1.0))
    assert reported_uncertainty(lone, {})["uncertainty_x_nm"][0] == pytest.approx(1.0)
    # whatever the parameters, nothing is reported below the CRLB
    shrinking = {"spread_weight": 0.0, "crlb_weight": 0.0, "floor_nm": 0.0}
    np.testing.assert_allclose(reported_uncertainty(table, shrinking)["uncertainty_x_nm"], 1.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        reported_uncertainty(table, {"crlb_weight": -0.5})


def test_fainter_posterior_peaks_get_larger_uncertainty_never_below_the_crlb():
    import pandas as pd

    from napari_smlm_diffusion.posterior import reported_uncertainty

    # three isolated molecules, alike but for the height of their posterior-mean peak
    table = pd.DataFrame({"x_nm": [0.0, 5000.0, 10000.0], "y_nm": [0.0] * 3,
                          "uncertainty_x_nm": [4.0] * 3, "uncertainty_y_nm": [4.0] * 3,
                          "posterior_std_x_nm": [10.0] * 3, "posterior_std_y_nm": [10.0] * 3,
                          "score": [0.3, 1.0, 3.0]})
    model = {"spread_weight": 0.5, "floor_nm": 8.0, "peak_height_exponent": 0.6}
    sigma = reported_uncertainty(table, model)["uncertainty_x_nm"].to_numpy()
    extra = 0.5 * 10.0**2 + 8.0**2  # no crowding exponent: the density does not enter
    np.testing.assert_allclose(sigma, np.sqrt(16.0 + extra * np.array([0.3, 1.0, 3.0]) ** -0.6))
    assert sigma[0] > sigma[1] > sigma[2] > 4.0
    with pytest.raises(ValueError, match="peak heights"):
        reported_uncertainty(table.drop(columns="score"), model)


def test_molecules_few_samples_found_get_larger_uncertainty_never_below_the_crlb():
    import pandas as pd

    from napari_smlm_diffusion.posterior import reported_uncertainty

    # three isolated molecules, alike but for the share of the samples that found them
    table = pd.DataFrame({"x_nm": [0.0, 5000.0, 10000.0], "y_nm": [0.0] * 3,
                          "uncertainty_x_nm": [4.0] * 3, "uncertainty_y_nm": [4.0] * 3,
                          "posterior_std_x_nm": [10.0] * 3, "posterior_std_y_nm": [10.0] * 3,
                          "score": [1.0] * 3, "detection_probability": [0.125, 0.5, 1.0]})
    model = {"spread_weight": 0.5, "floor_nm": 8.0, "detection_probability_exponent": 1.0}
    sigma = reported_uncertainty(table, model)["uncertainty_x_nm"].to_numpy()
    extra = 0.5 * 10.0**2 + 8.0**2
    np.testing.assert_allclose(sigma, np.sqrt(16.0 + extra / np.array([0.125, 0.5, 1.0])))
    assert sigma[0] > sigma[1] > sigma[2] > 4.0
    with pytest.raises(ValueError, match="detection probabilities"):
        reported_uncertainty(table.drop(columns="detection_probability"), model)


def test_std_map_calibration_adds_a_floor_to_the_weighted_sample_variance():
    from napari_smlm_diffusion.calibration import local_signal
    from napari_smlm_diffusion.posterior import reported_variance

    variance = np.zeros((64, 64), np.float32)
    variance[30:34, 30:34] = 0.04
    mean = np.zeros((64, 64), np.float32)
    mean[31:33, 31:33] = 1.0  # one molecule in the middle of the frame
    calibration = {"sample_variance_weight": 0.5, "floor": 0.02}
    flat = reported_variance(variance, mean, calibration, fine_pixel_nm=25.0)
    np.testing.assert_allclose(flat, 0.5 * variance + 0.02, rtol=1e-6)
    assert flat.dtype == np.float32
    assert reported_variance(variance, mean, {}, 25.0) is variance  # no calibration
    calibration.update(signal_exponent=0.5, signal_blur_nm=100.0)
    scaled = reported_variance(variance, mean, calibration, fine_pixel_nm=25.0)
    signal = local_signal(mean, 25.0, blur_nm=100.0)  # a 4-pixel Gaussian blur of the mean
    np.testing.assert_allclose(scaled, flat * (signal + 1e-3) ** 0.5, rtol=1e-5)
    assert scaled[32, 32] > 3 * scaled[0, 0]  # the floor is higher near the molecule
