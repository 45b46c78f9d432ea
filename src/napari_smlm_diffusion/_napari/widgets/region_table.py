"""A Qt table of per-region statistics: formatted numbers, numeric sorting, row selection."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ...geometry import to_user_frame

# column of the statistics table: (header, tooltip, format)
COLUMNS: dict[str, tuple[str, str, str]] = {
    "region": ("#", "Region: its label in the annotation image", "{:d}"),
    "source": ("Source", "threshold: from the std threshold; drawn: a Shapes region", "{}"),
    "frame": ("Frame", "Frame of the stack, counted from 1 (empty: every frame)", "{:d}"),
    "area_um2": ("Area µm²", "Area of the region", "{:.4f}"),
    "mean_std": ("Mean σ", "Mean posterior std in the region (KDE units)", "{:.3f}"),
    "max_std": ("Max σ", "Largest posterior std in the region (KDE units)", "{:.3f}"),
    "localizations": ("Locs", "Localizations inside the region", "{:d}"),
    "median_uncertainty_nm": ("Unc. nm", "Median uncertainty of those localizations "
                              "(per axis, 1 sigma); empty when none is known", "{:.1f}"),
}


class _Item(QTableWidgetItem):
    """A cell that sorts by its number (missing values last)."""

    def __init__(self, text: str, key: tuple[int, float, str]) -> None:
        super().__init__(text)
        self.key = key
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.key < getattr(other, "key", (2, 0.0, ""))


def _cell(value: object, column: str, fmt: str) -> _Item:
    missing = value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
    if missing:
        return _Item("", (2, 0.0, ""))
    if column == "frame":
        value = to_user_frame(int(value))  # shown from 1, like exported tables
    text = fmt.format(int(value) if fmt == "{:d}" else value)
    try:
        key = (0, float(value), "")
    except (TypeError, ValueError):
        key = (1, 0.0, text)
    return _Item(text, key)


class RegionTable(QTableWidget):
    """Statistics table; ``on_select(region)`` is called when the user selects a row."""

    def __init__(self, on_select: Callable[[int], None] | None = None) -> None:
        super().__init__(0, len(COLUMNS))
        self._on_select = on_select
        for index, (header, tooltip, _fmt) in enumerate(COLUMNS.values()):
            item = QTableWidgetItem(header)
            item.setToolTip(tooltip)
            self.setHorizontalHeaderItem(index, item)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        header = self.horizontalHeader()
        # columns as wide as their contents (headers never cut); the table scrolls sideways
        # when the dock is narrower
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(self.fontMetrics().horizontalAdvance("0.0000") + 8)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setMinimumHeight(160)
        self.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self.itemSelectionChanged.connect(self._selected)

    def show_table(self, table: pd.DataFrame) -> None:
        """Replace the rows with ``table`` (columns of :func:`~...annotate.region_statistics`)."""
        self.setSortingEnabled(False)
        self.blockSignals(True)
        self.clearContents()
        self.setRowCount(len(table))
        for col, (column, (_header, _tip, fmt)) in enumerate(COLUMNS.items()):
            values = table[column].tolist() if column in table.columns else [None] * len(table)
            for row, value in enumerate(values):
                self.setItem(row, col, _cell(value, column, fmt))
        self.blockSignals(False)
        self.setSortingEnabled(True)

    def region_at(self, row: int) -> int | None:
        """Region label shown in ``row`` (after any sorting)."""
        item = self.item(row, 0)
        return None if item is None or not item.text() else int(item.text())

    def _selected(self) -> None:
        rows = {index.row() for index in self.selectedIndexes()}
        if self._on_select is not None and len(rows) == 1:
            region = self.region_at(rows.pop())
            if region is not None:
                self._on_select(region)
