"""Adapted or generic models on the user's own stack: the label-free uncertainty check of both.

adapt fits everything on simulations of the user's setup. This last step looks at the user's
own frames: the posterior of the generic and of the adapted model pair on consecutive frames
from the middle of the stack, each checked without ground truth
(:func:`uncertainty_check.check_uncertainty`: molecules found again in the next frame). It
also chooses the adapted pair's per-molecule uncertainty model, the refitted or the generic one,
as the one whose label-free RMS of displacement / predicted is closer to 1 on these frames, when
both have at least ``CHOICE_MIN_PAIRS`` pairs; otherwise the held-out choice on simulations
stands. On both simulated benchmark stacks the label-free RMS ordered the two models as the
ground truth did (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from .adapt import Setup

CHECK_FRAMES = 32
REPORT_EVERY = 8  # frames between progress lines (a cancel is honoured at each)
#: Pairs the label-free check needs on the user's frames to choose the uncertainty model (the
#: RMS of a few dozen heavy-tailed ratios varies by more than the two models differ).
CHOICE_MIN_PAIRS = 100


@dataclass(frozen=True)
class StackExcerpt:
    """Consecutive raw frames (ADU) of the user's stack and the index of the first one."""

    frames: np.ndarray
    first: int

    @classmethod
    def middle(cls, data: Any, count: int = CHECK_FRAMES) -> StackExcerpt:
        """``count`` consecutive frames from the middle of a (lazy) stack (all when shorter)."""
        total = len(data)
        count = min(count, total)
        first = (total - count) // 2
        return cls(np.asarray(data[first:first + count]), first)

    @property
    def label(self) -> str:
        """The frames, 1-based, as a user numbers them."""
        return f"frames {self.first + 1}-{self.first + len(self.frames)}"


def checked(table: pd.DataFrame) -> dict:
    """The label-free check's fields and reading (the reason when it could not be made)."""
    from .uncertainty_check import UncertaintyCheckError, check_uncertainty, describe

    try:
        result = check_uncertainty(table)
    except UncertaintyCheckError as error:
        return {"reading": f"no check: {error}", "localizations": len(table)}
    return result.to_dict() | {"reading": describe(result), "localizations": len(table)}


def chosen_model(checks: dict[str, dict], fallback: str) -> tuple[str, str]:
    """The candidate whose label-free RMS is closest to 1 (by ratio), and why; ``fallback``
    when any candidate has fewer than ``CHOICE_MIN_PAIRS`` pairs."""
    if len(checks) < 2 or any(c.get("pairs", 0) < CHOICE_MIN_PAIRS for c in checks.values()):
        return fallback, f"held-out frames (fewer than {CHOICE_MIN_PAIRS} label-free pairs)"
    best = min(checks, key=lambda name: abs(math.log(checks[name]["rms_spread"])))
    return best, "label-free RMS on the user's frames"


def _posterior_table(excerpt: StackExcerpt, setup: Setup, engine, name: str,
                     report: Callable[[str], None]) -> pd.DataFrame:
    import pandas as pd

    from .posterior import iter_posterior
    from .posterior_settings import DEFAULT_POSTERIOR

    count, tables = len(excerpt.frames), []
    for batch in iter_posterior(excerpt.frames, setup.camera, engine, range(count),
                                DEFAULT_POSTERIOR, setup.psf_sigma_nm):
        tables.append(batch.localizations)
        if len(tables) % REPORT_EVERY == 0 or len(tables) == count:
            report(f"label-free check of the {name} models on {excerpt.label} of the stack: "
                   f"{len(tables)}/{count} frames")
    return pd.concat(tables, ignore_index=True)


def label_free_comparison(excerpt: StackExcerpt, setup: Setup, kde_weights: Path,
                          denoiser_weights: Path, candidates: dict[str, dict], current: str,
                          report: Callable[[str], None]) -> dict:
    """The label-free check of the generic and the adapted pair on ``excerpt``, and the adapted
    pair's uncertainty model chosen among ``candidates`` (name -> model; ``current``: the
    choice made on held-out simulated frames, kept when the frames give too few pairs).

    Returns ``{"frames": [first, end], "generic": {...}, "adapted": {...},
    "uncertainty_model": {"chosen", "by", "candidates": {name: check}}}``, each check with the
    fields of :meth:`uncertainty_check.CheckResult.to_dict`, the localizations and the
    plain-words ``reading``; ``adapted`` is the check under the chosen model.
    """
    from .posterior import PosteriorEngine, with_uncertainty_model

    record: dict[str, Any] = {"frames": [excerpt.first, excerpt.first + len(excerpt.frames)]}
    generic = PosteriorEngine.load(device="auto", notify=report)
    record["generic"] = checked(_posterior_table(excerpt, setup, generic, "generic", report))
    adapted = PosteriorEngine.load(str(kde_weights), str(denoiser_weights), device="auto",
                                   notify=report)
    table = _posterior_table(excerpt, setup, adapted, "adapted", report)
    checks = {name: checked(with_uncertainty_model(table, model))
              for name, model in candidates.items()}
    chosen, how = chosen_model(checks, current)
    record["adapted"] = checks[chosen]
    record["uncertainty_model"] = {"chosen": chosen, "by": how, "candidates": checks}
    for name in ("generic", "adapted"):
        report(f"{name} models on your {excerpt.label}: {record[name]['reading']}")
    rms = ", ".join(f"{name} {c['rms_spread']:.2f}" for name, c in checks.items()
                    if "rms_spread" in c)
    report(f"adapted models' uncertainty model on your data: {chosen} (by {how}"
           + (f"; label-free RMS {rms}" if rms else "") + ")")
    return record
