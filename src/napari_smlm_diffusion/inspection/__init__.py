"""Inspect raw data: camera, PSF, background, photons and density from the frames alone, and
warnings when the settings or the data leave what the models were trained on."""

from .checks import (
    check_settings,
    job_warnings,
    no_molecule_warning,
    ranges_of,
    training_ranges,
)
from .report import REPORT_KEYS, InspectionError, InspectionReport, inspect_stack

__all__ = [
    "REPORT_KEYS",
    "InspectionError",
    "InspectionReport",
    "check_settings",
    "inspect_stack",
    "job_warnings",
    "no_molecule_warning",
    "ranges_of",
    "training_ranges",
]
