"""Splitting a frame into overlapping tiles whose cores cover it exactly once."""

from __future__ import annotations


def tiles(size: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Split ``size`` pixels into tiles: (read start, read stop, keep start, keep stop)."""
    if size <= tile:
        return [(0, size, 0, size)]
    core = tile - 2 * margin
    spans = []
    for keep_start in range(0, size, core):
        keep_stop = min(size, keep_start + core)
        spans.append((max(0, keep_start - margin), min(size, keep_stop + margin), keep_start,
                      keep_stop))
    return spans
