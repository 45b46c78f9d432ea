"""Conditional DDPM mathematics: noise schedule, training loss, samplers, streaming moments.

Notation follows the reference paper: alpha_t = 1 - beta_t, gamma_t = prod_{s<=t} alpha_s,
and y_t = sqrt(gamma) y_0 + sqrt(1 - gamma) eps. The network is conditioned on the noise level
(log SNR = log(gamma / (1 - gamma))), not on the step index, so any inference schedule works. It
predicts either the noise eps (the reference's parametrisation) or the velocity
v = sqrt(gamma) eps - sqrt(1 - gamma) y_0 (Salimans & Ho 2022). With eps, the data estimate
y_0 = (y_t - sqrt(1 - gamma) eps) / sqrt(gamma) amplifies the network's error by 1 / sqrt(gamma)
at high noise; with v it never does, which matters here because the residual KDE is sparse and
small (std about 0.1) next to unit noise.

Schedule: the cosine schedule of Nichol & Dhariwal (2021) with T = 100 steps and offset s = 0.008,
whose final gamma_T is 2.4e-7 (pure noise), unlike the linear 1e-4..1e-2 beta schedule stated in the
reference draft, whose gamma_T stays near 0.6.

The model diffuses the residual r = (y - y_hat) * RESIDUAL_SCALE between the true KDE y and the CNN
estimate y_hat, so a posterior sample of the KDE is y_hat + r / RESIDUAL_SCALE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

T_STEPS = 100
COSINE_OFFSET = 0.008
RESIDUAL_SCALE = 2.0
MAX_BETA = 0.999
SOLVER_FINAL_HALF_LOG_SNR = 0.5 * math.log((1 - 1e-5) / 1e-5)
# The solver starts where the residual (|r| <= ~3) is buried in unit noise (sqrt(gamma) |r| < 0.1):
# earlier noise levels carry no information, so spending steps there is wasted.
SOLVER_START_GAMMA = 1e-3
PREDICTIONS = ("eps", "v")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_t, log_snr) -> eps or v
Bounds = tuple[torch.Tensor, torch.Tensor]  # elementwise (low, high) limits of y_0
StepCallback = Callable[[int, int], None]  # (network evaluations done, total); may raise to stop
# One generator for the whole batch, or one per sample (then a sample's noise does not depend on
# which other samples share its batch).
Noise = torch.Generator | Sequence[torch.Generator]


def gaussian(shape: tuple[int, ...], generator: Noise) -> torch.Tensor:
    """Standard normal noise of ``shape`` on the CPU from one generator or one per sample."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for {shape[0]} samples")
    return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])


def cosine_gammas(steps: int = T_STEPS, offset: float = COSINE_OFFSET) -> np.ndarray:
    """gamma_0..gamma_T (length steps + 1, gamma_0 = 1) of the cosine schedule."""
    t = np.arange(steps + 1, dtype=np.float64) / steps
    f = np.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    gammas = f / f[0]
    betas = np.clip(1 - gammas[1:] / gammas[:-1], 0.0, MAX_BETA)
    return np.concatenate([[1.0], np.cumprod(1 - betas)])


def log_snr(gamma: torch.Tensor) -> torch.Tensor:
    """log(gamma / (1 - gamma)), clipped to [-30, 30]."""
    gamma = gamma.clamp(1e-12, 1 - 1e-7)
    return torch.log(gamma / (1 - gamma)).clamp(-30.0, 30.0)


def sample_training_gamma(n: int, generator: torch.Generator | None = None,
                          gammas: np.ndarray | None = None) -> torch.Tensor:
    """gamma ~ U(gamma_t, gamma_{t-1}) with t uniform in 1..T (piecewise-uniform, WaveGrad)."""
    gammas = torch.as_tensor(cosine_gammas() if gammas is None else gammas, dtype=torch.float32)
    t = torch.randint(1, len(gammas), (n,), generator=generator)
    u = torch.rand(n, generator=generator)
    return gammas[t] + u * (gammas[t - 1] - gammas[t])


def diffusion_loss(model: Denoiser, y0: torch.Tensor,
                   generator: torch.Generator | None = None,
                   prediction: str = "eps",
                   snr_clip: tuple[float, float] | None = None) -> torch.Tensor:
    """Mean squared error of the predicted noise (eq. 13 of the reference) or velocity.

    With ``snr_clip = (low, high)`` each example's loss is reweighted so that its weight on the
    data error |y_0 - y_0_hat|^2 is the SNR clipped to [low, high] (Min-SNR weighting, Hang et
    al. 2023, with a floor): low-noise levels, where denoising is easy, no longer dominate, and
    high-noise levels, which decide which molecules a sample contains, are not ignored.
    """
    gamma = sample_training_gamma(len(y0), generator).to(y0.device)
    noise = torch.randn(y0.shape, generator=generator).to(y0.device)
    g = gamma[:, None, None, None]
    y_t = g.sqrt() * y0 + (1 - g).sqrt() * noise
    target = noise if prediction == "eps" else g.sqrt() * noise - (1 - g).sqrt() * y0
    error = torch.mean((model(y_t, log_snr(gamma)) - target) ** 2, dim=(1, 2, 3))
    if snr_clip is not None:
        snr = gamma / (1 - gamma).clamp_min(1e-7)
        native = snr if prediction == "eps" else snr + 1  # data-error weight of the plain loss
        error = error * snr.clamp(*snr_clip) / native
    return error.mean()


def predict(model: Denoiser, y: torch.Tensor, gamma: float, prediction: str = "eps",
            bounds: Bounds | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Data and noise estimates (y_0, eps) at noise level ``gamma``.

    Parameters
    ----------
    model : Denoiser
        Network output at (y_t, log SNR): eps or v, as ``prediction`` says.
    bounds : (low, high), optional
        Elementwise limits of y_0 (e.g. a KDE is never negative); y_0 is clipped to them and eps
        made consistent with the clipped y_0.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
    out = model(y, log_snr(torch.full((y.shape[0],), gamma, device=y.device)))
    a, s = math.sqrt(gamma), math.sqrt(1 - gamma)
    x0 = (y - s * out) / a if prediction == "eps" else a * y - s * out
    if bounds is None:
        eps = out if prediction == "eps" else s * y + a * out
        return x0, eps
    x0 = torch.maximum(torch.minimum(x0, bounds[1]), bounds[0])
    return x0, (y - a * x0) / s


Schedule = tuple[int, float]  # (T, offset) of the cosine schedule a model was trained with
DEFAULT_SCHEDULE: Schedule = (T_STEPS, COSINE_OFFSET)


def inference_gammas(steps: int, schedule: Schedule = DEFAULT_SCHEDULE) -> np.ndarray:
    """gamma at ``steps`` + 1 points of the cosine schedule (T, offset), from gamma_T (noise)
    to 1 (data)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    total, offset = schedule
    full = cosine_gammas(total, offset)
    positions = np.linspace(total, 0, steps + 1)
    return np.interp(positions, np.arange(total + 1), full)


def _report(callback: StepCallback | None, step: int, steps: int) -> None:
    if callback is not None:
        callback(step + 1, steps)


def sample_ddpm(model: Denoiser, shape: tuple[int, ...], generator: Noise,
                device: torch.device, steps: int = T_STEPS, prediction: str = "eps",
                bounds: Bounds | None = None, callback: StepCallback | None = None,
                schedule: Schedule = DEFAULT_SCHEDULE) -> torch.Tensor:
    """Ancestral DDPM sampling (eq. 10-11), ``steps`` network evaluations (reference: 100).

    The step's mean is that of q(y_prev | y_t, y_0) at the estimated y_0, which equals eq. 10
    when y_0 is not clipped.
    """
    gammas = inference_gammas(steps, schedule)
    y = gaussian(shape, generator).to(device)
    for k in range(steps):
        g_t, g_prev = float(gammas[k]), float(gammas[k + 1])
        alpha = g_t / g_prev
        beta = 1 - alpha
        x0, _ = predict(model, y, g_t, prediction, bounds)
        _report(callback, k, steps)
        mean = (math.sqrt(g_prev) * beta * x0 + math.sqrt(alpha) * (1 - g_prev) * y) / (1 - g_t)
        if k < steps - 1:
            sigma = math.sqrt(beta * (1 - g_prev) / (1 - g_t))  # posterior variance of q
            y = mean + sigma * gaussian(shape, generator).to(device)
        else:
            y = mean
    return y


def sample_ddim(model: Denoiser, shape: tuple[int, ...], generator: Noise,
                device: torch.device, steps: int = 10, prediction: str = "eps",
                bounds: Bounds | None = None, callback: StepCallback | None = None,
                schedule: Schedule = DEFAULT_SCHEDULE, eta: float = 0.0) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021): deterministic for eta = 0, few network evaluations."""
    gammas = inference_gammas(steps, schedule)
    y = gaussian(shape, generator).to(device)
    for k in range(steps):
        g_t, g_prev = float(gammas[k]), float(gammas[k + 1])
        y0, eps = predict(model, y, g_t, prediction, bounds)
        _report(callback, k, steps)
        sigma = eta * math.sqrt((1 - g_prev) / (1 - g_t) * (1 - g_t / g_prev))
        direction = math.sqrt(max(1 - g_prev - sigma**2, 0.0)) * eps
        y = math.sqrt(g_prev) * y0 + direction
        if sigma > 0 and k < steps - 1:
            y = y + sigma * gaussian(shape, generator).to(device)
    return y


def sample_dpm_solver(model: Denoiser, shape: tuple[int, ...], generator: Noise,
                      device: torch.device, steps: int = 10, prediction: str = "eps",
                      bounds: Bounds | None = None, callback: StepCallback | None = None,
                      schedule: Schedule = DEFAULT_SCHEDULE) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep ODE solver on data predictions.

    Network evaluations sit at ``steps`` noise levels uniform in log SNR from
    ``SOLVER_START_GAMMA`` to a final noise std of about 0.003 (gamma = 1 - 1e-5, inside the
    training range), whose data prediction is returned. The network is conditioned on the log
    SNR, so this grid does not depend on the training ``schedule`` (accepted for a uniform
    signature).
    """
    lam_start = 0.5 * math.log(SOLVER_START_GAMMA / (1 - SOLVER_START_GAMMA))
    lambdas = np.linspace(lam_start, SOLVER_FINAL_HALF_LOG_SNR, steps)
    gammas = 1.0 / (1.0 + np.exp(-2.0 * lambdas))
    y = gaussian(shape, generator).to(device)
    previous_x0, previous_h = None, None
    for k in range(steps):
        g_t = float(gammas[k])
        x0, _ = predict(model, y, g_t, prediction, bounds)
        _report(callback, k, steps)
        if k == steps - 1:
            return x0
        g_next = float(gammas[k + 1])
        h = float(lambdas[k + 1] - lambdas[k])
        estimate = x0
        if previous_x0 is not None:
            r = previous_h / h
            estimate = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        y = (math.sqrt(1 - g_next) / math.sqrt(1 - g_t)) * y - math.sqrt(g_next) * math.expm1(
            -h) * estimate
        previous_x0, previous_h = x0, h
    return y


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpm-solver": sample_dpm_solver}


@dataclass
class RunningMoments:
    """Welford's streaming mean and variance over samples (its state is two arrays, whatever
    the number of samples added; the caller decides whether the samples themselves are kept)."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, sample: np.ndarray) -> None:
        """Add one sample."""
        sample = np.asarray(sample, dtype=np.float64)
        if self.mean is None:
            self.mean = np.zeros_like(sample)
            self.m2 = np.zeros_like(sample)
        self.count += 1
        delta = sample - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (sample - self.mean)

    @property
    def variance(self) -> np.ndarray:
        """Unbiased sample variance (zero for a single sample)."""
        if self.mean is None:
            raise ValueError("no samples added")
        return self.m2 / max(self.count - 1, 1)
