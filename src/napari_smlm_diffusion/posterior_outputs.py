"""A posterior run's outputs streamed frame by frame, resumable, published atomically.

While the run goes, every finished frame's maps are written into fixed-size ``.npy`` files and
its localizations appended to a CSV, all in the hidden folder ``OUT/.posterior-partial``, and a
small state file records how many frames are complete (it is replaced after each frame, so it
never claims a frame whose maps and rows are not written). Memory does not grow with the number
of frames. A stopped run continues (``resume=True``) from its last complete frame: the block of
frames holding that frame is recomputed exactly as in an uninterrupted run (the same blocks,
counted from the start of the range), so the outputs are identical bit for bit. Only when every
frame is done are the final files written next to the folder, frame by frame, and renamed onto
their final names (inside the caller's :func:`io.atomic_group`, all or none).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .camera import Camera
from .errors import InputError
from .io import atomic_write, write_tiff, write_tiff_frames
from .io.tables import CSV_ROWS, csv_header, localization_rows
from .posterior import PosteriorBatch, PosteriorEngine, PosteriorSettings, iter_posterior
from .posterior_sampling import frames_per_block
from .postprocess.drift import sum_shifted_frames

#: (frames, frames per block) -> the frames' posteriors in order
Source = Callable[[range, int], Iterator[PosteriorBatch]]

PARTIAL_DIR = ".posterior-partial"
STATE_FILE = "state.json"
MAP_NAMES = ("mean", "variance", "samples")


class FrameFile:
    """A float32 ``.npy`` file of ``count`` items of ``shape``, written item by item."""

    def __init__(self, path: Path, count: int, shape: tuple[int, ...], create: bool) -> None:
        if create:
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(count, *shape)).flush()  # full size, then closed
        stored = np.lib.format.open_memmap(path, mode="r")
        if stored.shape != (count, *shape) or stored.dtype != np.float32:
            raise InputError(f"{path} holds {stored.dtype} {stored.shape}, expected float32 "
                             f"{(count, *shape)}: the partial run is damaged; run again without "
                             "--resume")
        self.path, self.offset = path, stored.offset
        del stored
        self.handle = open(path, "r+b")  # noqa: SIM115 (closed by close())

    def write(self, index: int, item: np.ndarray) -> None:
        """Write item ``index`` (it reaches the page cache at once: a killed process keeps it)."""
        data = np.ascontiguousarray(item, dtype=np.float32)
        self.handle.seek(self.offset + index * data.nbytes)
        self.handle.write(data.tobytes())

    def close(self) -> None:
        self.handle.close()


def _save_state(folder: Path, state: dict) -> None:
    """Replace the state file now: inside an atomic group, ``atomic_write`` would wait for the
    group, and a stopped run would then have no state."""
    temporary = folder / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state))
    os.replace(temporary, folder / STATE_FILE)


@dataclass
class StreamedRun:
    """What :func:`stream_posterior` did: frames, molecules and where it resumed (0: fresh)."""

    frames: int
    molecules: int
    resumed_at: int


def _differences(saved: dict, key: dict) -> list[str]:
    return sorted(name for name in set(saved) | set(key) if saved.get(name) != key.get(name))


def stream_posterior(
    stack: Sequence | np.ndarray,
    camera: Camera,
    engine: PosteriorEngine,
    frames: range,
    settings: PosteriorSettings,
    out: Path,
    run_key: dict[str, Any],
    psf_sigma_nm: float | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    source: Source | None = None,
) -> StreamedRun:
    """Sample ``frames`` into ``out/.posterior-partial`` frame by frame (see the module
    docstring). ``run_key`` (JSON values) identifies the run: a partial run with another key is
    not resumed (InputError says what differs); without ``resume`` a partial run is replaced.

    ``source(frames, block)`` gives the per-frame posteriors of a range in order, computed in
    blocks of ``block`` frames counted from its start (default: :func:`iter_posterior` here;
    :func:`posterior_distributed.distributed_source` on a dask cluster)."""
    if len(frames) == 0:
        raise InputError("no frames to sample: the frame range is empty")
    folder = Path(out) / PARTIAL_DIR
    rows, cols = np.asarray(stack[frames[0]]).shape[-2:]
    block = frames_per_block(settings.samples, (rows, cols), engine.device)
    key = {**run_key, "frames": [frames.start, frames.stop, frames.step], "block": block}
    state = None
    if (folder / STATE_FILE).is_file():
        state = json.loads((folder / STATE_FILE).read_text())
    if resume and state is not None and state["key"] != key:
        raise InputError(f"cannot resume: the partial run in {out} differs in "
                         f"{', '.join(_differences(state['key'], key))}; run without --resume "
                         "to start again")
    if not (resume and state is not None):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        state = {"key": key, "done": 0, "molecules": 0, "csv_bytes": 0, "columns": None}
        _save_state(folder, state)
    fresh = state["done"] == 0 and state["csv_bytes"] == 0
    u = engine.kde.upsampling
    fine = (rows * u, cols * u)
    shapes = {"mean": fine, "variance": fine, "samples": (settings.keep_samples, *fine)}
    files = {name: FrameFile(folder / f"{name}.npy", len(frames), shapes[name], fresh)
             for name in MAP_NAMES if name != "samples" or settings.keep_samples}
    resumed_at = state["done"]
    start = (resumed_at // block) * block
    try:
        with open(folder / "localizations.csv", "a+b") as table:
            table.truncate(state["csv_bytes"])  # rows of a frame that was not completed
            remaining = frames[start:] if state["done"] < len(frames) else range(0)
            if source is None:
                batches = iter_posterior(stack, camera, engine, remaining, settings,
                                         psf_sigma_nm, should_stop, block_frames=block)
            else:
                batches = source(remaining, block)
            for position, batch in enumerate(batches, start=start):
                if position < state["done"]:
                    continue  # recomputed with its block; already written
                result = batch.frames[0]
                files["mean"].write(position, result.mean)
                files["variance"].write(position, result.reported_variance)
                if "samples" in files:
                    files["samples"].write(position, result.kept)
                _append_rows(table, batch.localizations, state)
                state["done"] = position + 1
                _save_state(folder, state)
                if progress is not None:
                    progress(state["done"], len(frames))
    finally:
        for file in files.values():
            file.close()
    return StreamedRun(len(frames), state["molecules"], resumed_at)


def _append_rows(table, localizations, state: dict) -> None:
    """Append one frame's rows (ids continuing), header first; updates ``state``."""
    rows = localization_rows(table.name, localizations, state["molecules"] + 1)
    if state["columns"] is None:
        state["columns"] = list(rows.columns)
        table.write((csv_header(rows.columns) + "\n").encode())
    text = rows.reindex(columns=state["columns"]).to_csv(**CSV_ROWS) if len(rows) else ""
    table.write(text.encode())
    table.flush()
    state["molecules"] += len(rows)
    state["csv_bytes"] = table.tell()


def publish_posterior(out: Path, metadata: dict, std_metadata: dict,
                      fine_pixel_nm: float, drift: tuple[np.ndarray, str] | None = None) -> None:
    """Write the final files of a complete streamed run next to its partial folder, frame by
    frame: mean.tif, std.tif (sqrt of the calibrated variance), sum_mean.tif, sum_std.tif,
    samples.tif (if kept) and localizations.csv. The partial folder is left for the caller to
    remove once the files are in place.

    ``drift`` (curve in nm of every frame from 0, its source for the metadata): the sums are
    made of frames shifted back by the curve (:func:`postprocess.drift.sum_shifted_frames`):
    sum_mean of the shifted means, sum_std the sqrt of the sum of the shifted variance maps."""
    folder = Path(out) / PARTIAL_DIR
    state = json.loads((folder / STATE_FILE).read_text())
    frames = range(*state["key"]["frames"])
    if state["done"] != len(frames):
        raise InputError(f"the partial run in {out} has {state['done']} of {len(frames)} frames")
    mean = np.lib.format.open_memmap(folder / "mean.npy", mode="r")
    variance = np.lib.format.open_memmap(folder / "variance.npy", mode="r")
    sum_metadata = dict(metadata)
    if drift is None:
        sum_mean = np.zeros(mean.shape[1:], np.float64)
        sum_variance = np.zeros(mean.shape[1:], np.float64)
        for frame_mean, frame_variance in zip(mean, variance, strict=True):
            sum_mean += frame_mean
            sum_variance += frame_variance
    else:
        curve, source = drift
        sum_mean = sum_shifted_frames(mean, curve, fine_pixel_nm, first_frame=frames.start)
        # interpolation can undershoot zero next to sharp peaks: variances stay >= 0
        sum_variance = np.maximum(sum_shifted_frames(variance, curve, fine_pixel_nm,
                                                     first_frame=frames.start), 0.0)
        sum_metadata["drift_corrected_with"] = source
    write_tiff_frames(out / "mean.tif", (np.array(m) for m in mean), mean.shape,
                      pixel_size_nm=fine_pixel_nm, metadata=metadata)
    write_tiff_frames(out / "std.tif", (np.sqrt(v) for v in variance), variance.shape,
                      pixel_size_nm=fine_pixel_nm, metadata={**metadata, **std_metadata})
    write_tiff(out / "sum_mean.tif", sum_mean.astype(np.float32), pixel_size_nm=fine_pixel_nm,
               metadata={**sum_metadata, "content": "sum over frames of posterior means"})
    write_tiff(out / "sum_std.tif", sum_variance.astype(np.float32) ** 0.5,
               pixel_size_nm=fine_pixel_nm,
               metadata={**sum_metadata, **std_metadata, "content": "sqrt of the sum over frames "
                         "of the posterior variances"})
    if (folder / "samples.npy").is_file():
        samples = np.lib.format.open_memmap(folder / "samples.npy", mode="r")
        flat = samples.reshape(-1, *samples.shape[-2:])
        write_tiff_frames(out / "samples.tif", (np.array(s) for s in flat), flat.shape,
                          pixel_size_nm=fine_pixel_nm,
                          metadata={**metadata, "order": "frame-major, then sample"})
    with atomic_write(out / "localizations.csv") as temporary:
        shutil.copyfile(folder / "localizations.csv", temporary)
