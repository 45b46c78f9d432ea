"""A light histogram drawn with QPainter, with a selected range the user can drag.

:class:`RangeHistogram` shows the counts of one column of values in :data:`BINS` bins between
their :data:`SHOWN` percentiles (so that a few outliers do not squeeze the others into one
bin) and shades the selected range; dragging with the mouse selects a new range and emits
:attr:`RangeHistogram.dragged` ``(low, high)``. A drag that reaches an edge of the histogram
selects up to the minimum or maximum of all values, outliers included.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

BINS = 40
SHOWN = (2.0, 98.0)
HEIGHT = 48
BAR = QColor(120, 170, 230)
OUTSIDE = QColor(90, 90, 100)
SELECTION = QColor(255, 255, 255, 28)


class RangeHistogram(QWidget):
    """Histogram of ``values`` with a selected range (see the module docstring)."""

    dragged = Signal(float, float)

    def __init__(self, values: np.ndarray, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        self.minimum, self.maximum = ((float(finite.min()), float(finite.max()))
                                      if finite.size else (0.0, 1.0))
        self.low, self.high = ((float(v) for v in np.percentile(finite, SHOWN)) if finite.size
                               else (0.0, 1.0))
        if self.high <= self.low:
            self.low, self.high = self.minimum, max(self.maximum, self.minimum + 1.0)
        self.counts, self.edges = np.histogram(finite, bins=BINS, range=(self.low, self.high))
        self.selection = (self.minimum, self.maximum)
        self._press: float | None = None
        self.setMinimumHeight(HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt)
        return QSize(240, HEIGHT)

    def set_selection(self, low: float, high: float) -> None:
        """Shade ``[low, high]``."""
        self.selection = (low, high)
        self.update()

    def _value_at(self, x: float) -> float:
        fraction = x / max(self.width() - 1, 1)
        if fraction <= 0.0:
            return self.minimum
        if fraction >= 1.0:
            return self.maximum
        return self.low + fraction * (self.high - self.low)

    def _x_of(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low) * self.width()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt)
        painter = QPainter(self)
        width, height = self.width(), self.height()
        top = max(int(self.counts.max()), 1)
        step = width / len(self.counts)
        low, high = self.selection
        for i, count in enumerate(self.counts):
            inside = self.edges[i + 1] >= low and self.edges[i] <= high
            bar = height * count / top
            painter.fillRect(QRectF(i * step, height - bar, max(step - 1, 1), bar),
                             BAR if inside else OUTSIDE)
        x0, x1 = max(self._x_of(low), 0.0), min(self._x_of(high), float(width))
        painter.fillRect(QRectF(x0, 0, max(x1 - x0, 1), height), SELECTION)
        painter.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt)
        self._press = self._value_at(event.position().x())

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 (Qt)
        if self._press is not None:
            value = self._value_at(event.position().x())
            self.set_selection(min(self._press, value), max(self._press, value))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 (Qt)
        if self._press is None:
            return
        value = self._value_at(event.position().x())
        low, high = sorted((self._press, value))
        self._press = None
        if high > low:
            self.dragged.emit(low, high)
