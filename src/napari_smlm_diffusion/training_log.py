"""The validation log of a training run (``log.jsonl``): one JSON entry per validation.

Written by :func:`.train.run_training`; read while the run goes on (the Adapt tab's curves) and
after it (adapt's advice on the objective). Kept free of torch so that the widgets import it
cheaply.
"""

from __future__ import annotations

import json
from pathlib import Path

LOG_NAME = "log.jsonl"


def training_log(path: Path) -> list[dict]:
    """The entries of a training run's ``log.jsonl`` (a line being written is skipped; a step
    logged again after a resume replaces the earlier entry), in step order."""
    if not path.is_file():
        return []
    entries: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        entries[int(entry["step"])] = entry
    return [entries[step] for step in sorted(entries)]
