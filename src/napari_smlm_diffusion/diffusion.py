"""Conditional DDPM mathematics: noise schedule, training loss, samplers, streaming moments.

Notation follows the reference paper: alpha_t = 1 - beta_t, gamma_t = prod_{s<=t} alpha_s,
and y_t = sqrt(gamma) y_0 + sqrt(1 - gamma) eps. The network predicts eps and is conditioned on the
noise level (log SNR = log(gamma / (1 - gamma))), not on the step index, so any inference schedule
works.

Schedule: the cosine schedule of Nichol & Dhariwal (2021) with T = 100 steps and offset s = 0.008,
whose final gamma_T is ~1e-9 (pure noise), unlike the linear 1e-4..1e-2 beta schedule stated in the
reference draft, whose gamma_T stays near 0.6.

The model diffuses the residual r = (y - y_hat) * RESIDUAL_SCALE between the true KDE y and the CNN
estimate y_hat, so a posterior sample of the KDE is y_hat + r / RESIDUAL_SCALE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

T_STEPS = 100
COSINE_OFFSET = 0.008
RESIDUAL_SCALE = 2.0
MAX_BETA = 0.999
SOLVER_FINAL_HALF_LOG_SNR = 0.5 * math.log((1 - 1e-5) / 1e-5)

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_t, log_snr) -> eps


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
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error of the predicted noise (eq. 13 of the reference)."""
    gamma = sample_training_gamma(len(y0), generator).to(y0.device)
    noise = torch.randn(y0.shape, generator=generator).to(y0.device)
    g = gamma[:, None, None, None]
    y_t = g.sqrt() * y0 + (1 - g).sqrt() * noise
    return torch.mean((model(y_t, log_snr(gamma)) - noise) ** 2)


def inference_gammas(steps: int) -> np.ndarray:
    """gamma at ``steps`` + 1 points of the cosine schedule, from gamma_T (noise) to 1 (data)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    full = cosine_gammas(T_STEPS)
    positions = np.linspace(T_STEPS, 0, steps + 1)
    return np.interp(positions, np.arange(T_STEPS + 1), full)


def sample_ddpm(model: Denoiser, shape: tuple[int, ...], generator: torch.Generator,
                device: torch.device, steps: int = T_STEPS) -> torch.Tensor:
    """Ancestral DDPM sampling (eq. 10-11), ``steps`` network evaluations (reference: 100)."""
    gammas = inference_gammas(steps)
    y = torch.randn(shape, generator=generator).to(device)
    for k in range(steps):
        g_t, g_prev = float(gammas[k]), float(gammas[k + 1])
        alpha = g_t / g_prev
        beta = 1 - alpha
        gamma_vec = torch.full((shape[0],), g_t, device=device)
        eps = model(y, log_snr(gamma_vec))
        mean = (y - beta / math.sqrt(1 - g_t) * eps) / math.sqrt(alpha)
        if k < steps - 1:
            sigma = math.sqrt(beta * (1 - g_prev) / (1 - g_t))  # posterior variance of q
            y = mean + sigma * torch.randn(shape, generator=generator).to(device)
        else:
            y = mean
    return y


def sample_ddim(model: Denoiser, shape: tuple[int, ...], generator: torch.Generator,
                device: torch.device, steps: int = 10, eta: float = 0.0) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021): deterministic for eta = 0, few network evaluations."""
    gammas = inference_gammas(steps)
    y = torch.randn(shape, generator=generator).to(device)
    for k in range(steps):
        g_t, g_prev = float(gammas[k]), float(gammas[k + 1])
        gamma_vec = torch.full((shape[0],), g_t, device=device)
        eps = model(y, log_snr(gamma_vec))
        y0 = (y - math.sqrt(1 - g_t) * eps) / math.sqrt(g_t)
        sigma = eta * math.sqrt((1 - g_prev) / (1 - g_t) * (1 - g_t / g_prev))
        direction = math.sqrt(max(1 - g_prev - sigma**2, 0.0)) * eps
        y = math.sqrt(g_prev) * y0 + direction
        if sigma > 0 and k < steps - 1:
            y = y + sigma * torch.randn(shape, generator=generator).to(device)
    return y


def sample_dpm_solver(model: Denoiser, shape: tuple[int, ...], generator: torch.Generator,
                      device: torch.device, steps: int = 10) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep ODE solver on data predictions.

    Network evaluations sit at ``steps`` noise levels uniform in log SNR from the end of the
    training schedule to a final noise std of about 0.003 (gamma = 1 - 1e-5, inside the training
    range), whose data prediction is returned.
    """
    gamma_end = cosine_gammas(T_STEPS)[T_STEPS]
    lam_start = 0.5 * math.log(gamma_end / (1 - gamma_end))
    lambdas = np.linspace(lam_start, SOLVER_FINAL_HALF_LOG_SNR, steps)
    gammas = 1.0 / (1.0 + np.exp(-2.0 * lambdas))
    y = torch.randn(shape, generator=generator).to(device)
    previous_x0, previous_h = None, None
    for k in range(steps):
        g_t = float(gammas[k])
        gamma_vec = torch.full((shape[0],), g_t, device=device)
        eps = model(y, log_snr(gamma_vec))
        x0 = (y - math.sqrt(1 - g_t) * eps) / math.sqrt(g_t)
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
    """Welford's streaming mean and variance over samples (memory independent of their number)."""

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
