"""The "SMLM" dock: every tool of the plugin in one dock, one tab per tool.

Each tab holds one tool widget in a vertical scroll area, so the dock fits a 1920 x 1080 screen
whatever the tool's length, and its texts wrap instead of widening the dock. To add a tool,
append ``(title, factory)`` to :data:`TABS` (``factory(viewer)`` returns a magicgui widget or a
QWidget), or call :meth:`SmlmDock.add_tab` on an open dock. A tool with a
``set_active(bool)`` method is told whether its tab is shown (the annotation thresholds a new
std map only then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from .annotation_widget import AnnotationWidget
from .camera_widget import CameraWidget
from .filter_widget import FilterWidget
from .kde_widget import KdeWidget
from .posterior_widget import PosteriorWidget

if TYPE_CHECKING:
    import napari

#: Width of the dock: room for the labels and fields of every tool, about a fifth of 1920 px.
DOCK_WIDTH = 520

#: The tabs, in order: title and a factory taking the viewer.
TABS: list[tuple[str, Callable[[Any], Any]]] = [
    ("Camera && PSF", CameraWidget),
    ("KDE CNN", KdeWidget),
    ("Posterior", PosteriorWidget),
    ("Filter && export", FilterWidget),
    ("Annotation", AnnotationWidget),
]


class SmlmDock(QWidget):
    """One dock with a tab per tool (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = napari_viewer
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.setUsesScrollButtons(True)
        self.tools: dict[str, Any] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(DOCK_WIDTH)
        for title, factory in TABS:
            self.add_tab(title, factory(napari_viewer))
        self.tabs.currentChanged.connect(self._on_tab)
        self._on_tab(self.tabs.currentIndex())

    def _on_tab(self, index: int) -> None:
        """Tell the tools that have a ``set_active`` method whether their tab is shown."""
        for position, tool in enumerate(self.tools.values()):
            if hasattr(tool, "set_active"):
                tool.set_active(position == index)

    def add_tab(self, title: str, tool: Any) -> None:
        """Add ``tool`` (magicgui widget or QWidget) as a scrollable tab called ``title``."""
        holder = QWidget()  # the tool at its natural height, the rest of the tab empty
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(getattr(tool, "native", tool))
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(holder)
        self.tabs.addTab(scroll, title)
        self.tools[title.replace("&&", "&")] = tool

    def tool(self, title: str) -> Any:
        """The tool of the tab called ``title`` (e.g. "KDE CNN")."""
        return self.tools[title]

    def show_tab(self, title: str) -> Any:
        """Bring the tab called ``title`` to the front; return its tool."""
        self.tabs.setCurrentIndex(list(self.tools).index(title))
        return self.tools[title]
