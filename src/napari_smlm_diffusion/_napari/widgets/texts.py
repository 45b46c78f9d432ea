"""Read-only text rows of the widgets: wrapped, left-aligned, red for errors."""

from __future__ import annotations

from magicgui.widgets import Label
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

ERROR_STYLE = "color: #ff6b6b;"


def text_label(label: str = "", tooltip: str | None = None) -> Label:
    """A label showing a few lines of text (word-wrapped, left-aligned, selectable)."""
    widget = Label(label=label, tooltip=tooltip)
    widget.native.setWordWrap(True)
    widget.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    widget.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return widget


def show_text(widget: Label, text: str, error: bool = False) -> None:
    """Show ``text`` in ``widget``, in red when it is an error."""
    widget.value = text
    widget.native.setStyleSheet(ERROR_STYLE if error else "")
