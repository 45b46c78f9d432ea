"""Random localization tables (ThunderSTORM columns, nm) for the format tests."""

import numpy as np
import pandas as pd


def random_localizations(seed: int, n: int, frames: int, per_axis: bool = False,
                         merged: bool = False) -> pd.DataFrame:
    """``n`` localizations over ``frames`` frames; ``per_axis`` adds uncertainty_x/y_nm,
    ``merged`` the columns of merged blinks (frames_on, last_frame)."""
    rng = np.random.default_rng(seed)
    columns = {
        "frame": np.sort(rng.integers(0, frames, n)),
        "x_nm": rng.uniform(100, 20_000, n),
        "y_nm": rng.uniform(100, 15_000, n),
        "sigma_nm": rng.uniform(100, 160, n),
        "photons": rng.uniform(200, 9000, n),
        "background": rng.uniform(5, 50, n),
        "bkgstd": rng.uniform(1, 9, n),
    }
    if per_axis:
        columns["uncertainty_x_nm"] = rng.uniform(3, 30, n)
        columns["uncertainty_y_nm"] = rng.uniform(3, 30, n)
    columns["uncertainty_nm"] = rng.uniform(3, 30, n)
    if merged:
        columns["frames_on"] = rng.integers(1, 5, n)
        columns["last_frame"] = np.sort(rng.integers(0, frames, n))
    return pd.DataFrame(columns)
