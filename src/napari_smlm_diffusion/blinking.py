"""Photoswitching kinetics of fluorophores in continuous time, integrated over camera frames.

Each fluorophore is a three-state Markov chain: *on* (emitting) -> *off* at rate ``1 / on_time``,
*off* -> *on* at rate ``1 / off_time`` (reactivation), and at every on -> off transition it bleaches
(for good) with probability ``1 / bleach_cycles``, so the number of on-events before bleaching is
geometric with mean ``bleach_cycles``. Times are in frames. A frame's photons of a fluorophore are
its brightness times the fraction of the frame it spent on, so events that start or end within a
frame give dimmer spots, as on a real camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Blinking:
    """Switching kinetics of the fluorophores.

    Parameters
    ----------
    on_time : float
        Mean duration of an on-event in frames (> 0).
    off_time : float
        Mean time between on-events of one fluorophore in frames (> 0).
    bleach_cycles : float
        Mean number of on-events before a fluorophore bleaches (>= 1; ``inf``: never bleaches).
    photon_spread : float
        Log-normal standard deviation of the frame-to-frame brightness fluctuation of one
        fluorophore (0: its brightness is constant; its brightness itself is drawn once from the
        photon range of the simulation).
    """

    on_time: float = 3.0
    off_time: float = 300.0
    bleach_cycles: float = math.inf
    photon_spread: float = 0.2

    def __post_init__(self) -> None:
        if not (self.on_time > 0 and math.isfinite(self.on_time)):
            raise ValueError(f"on_time must be a finite number of frames > 0, got {self.on_time}")
        if not (self.off_time > 0 and math.isfinite(self.off_time)):
            raise ValueError(f"off_time must be a finite number of frames > 0, got "
                             f"{self.off_time}")
        if not self.bleach_cycles >= 1:
            raise ValueError(f"bleach_cycles must be >= 1 (inf: no bleaching), got "
                             f"{self.bleach_cycles}")
        if not (self.photon_spread >= 0 and math.isfinite(self.photon_spread)):
            raise ValueError(f"photon_spread must be >= 0, got {self.photon_spread}")

    @property
    def duty_cycle(self) -> float:
        """Fraction of time an unbleached fluorophore is on: on / (on + off)."""
        return self.on_time / (self.on_time + self.off_time)

    @property
    def bleach_probability(self) -> float:
        """Probability of bleaching at the end of an on-event."""
        return 0.0 if math.isinf(self.bleach_cycles) else 1.0 / self.bleach_cycles


class BlinkingTrajectories:
    """On-fractions of ``n`` fluorophores, frame after frame.

    The chain starts in its steady state (each fluorophore on with probability equal to the duty
    cycle, none bleached); :meth:`next_frame` integrates the on-time over the next frame.
    """

    def __init__(self, n: int, kinetics: Blinking, rng: np.random.Generator):
        self.kinetics = kinetics
        self.rng = rng
        self.time = 0.0
        self.on = rng.random(n) < kinetics.duty_cycle
        self.alive = np.ones(n, dtype=bool)
        self.next_switch = np.where(self.on, rng.exponential(kinetics.on_time, n),
                                    rng.exponential(kinetics.off_time, n))

    def next_frame(self) -> np.ndarray:
        """Fraction of the next frame each fluorophore spent on, shape (n,), in [0, 1]."""
        start, end = self.time, self.time + 1.0
        on_time = np.zeros(self.on.shape)
        segment_start = np.full(self.on.shape, start)
        pending = np.flatnonzero(self.alive & (self.next_switch < end))
        while pending.size:
            switch = self.next_switch[pending]
            was_on = self.on[pending]
            turning_off, turning_on = pending[was_on], pending[~was_on]
            on_time[turning_off] += switch[was_on] - segment_start[turning_off]
            segment_start[pending] = switch
            self.on[pending] = ~was_on
            bleached = self.rng.random(turning_off.size) < self.kinetics.bleach_probability
            self.alive[turning_off[bleached]] = False
            self.next_switch[turning_off] = switch[was_on] + self.rng.exponential(
                self.kinetics.off_time, turning_off.size)
            self.next_switch[turning_on] = switch[~was_on] + self.rng.exponential(
                self.kinetics.on_time, turning_on.size)
            pending = pending[self.alive[pending] & (self.next_switch[pending] < end)]
        still_on = self.on & self.alive
        on_time[still_on] += end - segment_start[still_on]
        self.time = end
        return on_time
