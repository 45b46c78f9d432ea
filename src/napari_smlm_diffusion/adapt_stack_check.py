"""Adapted or generic models on the user's own stack: the label-free uncertainty check of both.

adapt fits and chooses everything on simulations of the user's setup. This last step looks at
the user's own frames: the posterior of the generic and of the adapted model pair on consecutive
frames from the middle of the stack, each checked without ground truth
(:func:`uncertainty_check.check_uncertainty`: molecules found again in the next frame). On the
simulated benchmark stacks the check's RMS ordered the two pairs as the ground truth did
(docs/benchmarks.md); it is reported, not used to choose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .adapt import Setup

CHECK_FRAMES = 32
REPORT_EVERY = 8  # frames between progress lines (a cancel is honoured at each)


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


def label_free_comparison(excerpt: StackExcerpt, setup: Setup, kde_weights: Path,
                          denoiser_weights: Path, report: Callable[[str], None]) -> dict:
    """The label-free check of the generic and the adapted model pair on ``excerpt``.

    Returns ``{"frames": [first, end], "generic": {...}, "adapted": {...}}``, each with the
    check's fields (:meth:`uncertainty_check.CheckResult.to_dict`), the localizations and the
    plain-words ``reading`` (the reason when the check could not be made); reports one line per
    pair.
    """
    import pandas as pd

    from .posterior import PosteriorEngine, iter_posterior
    from .posterior_settings import DEFAULT_POSTERIOR
    from .uncertainty_check import UncertaintyCheckError, check_uncertainty, describe

    pairs = {"generic": PosteriorEngine.load(device="auto", notify=report),
             "adapted": PosteriorEngine.load(str(kde_weights), str(denoiser_weights),
                                             device="auto", notify=report)}
    count = len(excerpt.frames)
    record: dict[str, Any] = {"frames": [excerpt.first, excerpt.first + count]}
    for name, engine in pairs.items():
        tables = []
        for batch in iter_posterior(excerpt.frames, setup.camera, engine, range(count),
                                    DEFAULT_POSTERIOR, setup.psf_sigma_nm):
            tables.append(batch.localizations)
            if len(tables) % REPORT_EVERY == 0 or len(tables) == count:
                report(f"label-free check of the {name} models on {excerpt.label} of the "
                       f"stack: {len(tables)}/{count} frames")
        table = pd.concat(tables, ignore_index=True)
        try:
            result = check_uncertainty(table)
            record[name] = result.to_dict() | {"reading": describe(result)}
        except UncertaintyCheckError as error:
            record[name] = {"reading": f"no check: {error}"}
        record[name]["localizations"] = len(table)
        report(f"{name} models on your {excerpt.label}: {record[name]['reading']}")
    return record
