"""Issue 16 items 3 and 6: one "SMLM" dock with a tab per tool that fits a 1920 x 1080 screen,
texts wrapped, nothing clipped, and a tooltip with units on every field."""

import re

import pytest
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QWidget,
)

from napari_helpers import PLUGIN

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]

TITLES = ["Camera & PSF", "KDE CNN", "Posterior", "Filter & export", "Annotation"]
#: A unit, or what a dimensionless field counts.
UNITS = re.compile(r"(\bnm\b|\bADU\b|\be-|photons|frames?\b|samples?\b|\bsteps?\b|\bpx\b|"
                   r"pixels?\b|\b0-1\b|dimensionless|\bfraction\b|\bseed\b|\bfile\b|\.safetensors)",
                   re.IGNORECASE)
FIELDS = (QAbstractSpinBox, QComboBox, QLineEdit)


def open_dock(viewer, qtbot):
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "SMLM")
    window = viewer.window._qt_window
    window.resize(1920, 1080)
    window.show()
    qtbot.waitExposed(window)
    return window, dock


def tab_contents(dock):
    """Show each tab in turn; yield its title, scroll area and content."""
    for index in range(dock.tabs.count()):
        dock.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        scroll = dock.tabs.widget(index)
        assert isinstance(scroll, QScrollArea)
        yield dock.tabs.tabText(index).replace("&&", "&"), scroll, scroll.widget()


def tooltip_of(widget, top):
    """The tooltip of ``widget`` or of its nearest ancestor below ``top`` that has one."""
    while widget is not None and widget is not top:
        if widget.toolTip():
            return widget.toolTip()
        widget = widget.parentWidget()
    return ""


def test_one_dock_with_a_tab_per_tool_fits_1080p(viewer, qtbot):
    window, dock = open_dock(viewer, qtbot)
    assert [dock.tabs.tabText(i).replace("&&", "&") for i in range(dock.tabs.count())] == TITLES
    assert window.minimumSizeHint().height() <= 1080 and window.height() <= 1080
    assert window.minimumSizeHint().width() <= 1920
    for title, scroll, content in tab_contents(dock):
        viewport = scroll.viewport()
        assert content.minimumSizeHint().width() <= viewport.width(), title  # no side scrolling
        assert dock.height() <= 1080, title
        # every text is readable: wrapped, or as wide as it needs
        for label in content.findChildren(QLabel):
            if label.isVisible() and label.text():
                assert label.wordWrap() or label.sizeHint().width() <= label.width() + 1, (
                    title, label.text())
        # every field is reachable: inside the content, which scrolls vertically
        for field in content.findChildren(QWidget):
            if isinstance(field, (*FIELDS, QAbstractButton)) and field.isVisible():
                corner = field.mapTo(content, field.rect().bottomRight())
                assert corner.x() <= content.width() + 1, (title, field)
                assert corner.y() <= content.height() + 1, (title, field)


def test_every_field_has_a_tooltip_with_units(viewer, qtbot):
    _, dock = open_dock(viewer, qtbot)
    missing, unitless = [], []
    for title, _scroll, content in tab_contents(dock):
        for field in content.findChildren(QWidget):
            if not isinstance(field, (*FIELDS, QAbstractButton)) or not field.isVisible():
                continue
            if isinstance(field, QLineEdit) and isinstance(field.parentWidget(),
                                                           QAbstractSpinBox | QComboBox):
                continue  # the editor inside a spin box or combo box
            tip = tooltip_of(field, content)
            if not tip:
                missing.append((title, type(field).__name__, getattr(field, "text", str)()))
            elif isinstance(field, QAbstractSpinBox | QLineEdit) and not UNITS.search(tip):
                unitless.append((title, tip))
    assert not missing, missing
    assert not unitless, "\n".join(f"{t}: {tip}" for t, tip in unitless)


def test_annotation_tab_thresholds_a_new_std_map_only_when_shown(viewer, qtbot):
    import numpy as np

    from napari_smlm_diffusion._napari.widgets.annotation_widget import REGIONS_NAME
    from napari_smlm_diffusion._napari.widgets.layer_choice import OUTPUT_KEY
    from napari_smlm_diffusion._napari.widgets.posterior_layers import STD_NAME, STD_ROLE

    _, dock = open_dock(viewer, qtbot)
    dock.show_tab("Posterior")
    std = np.random.default_rng(0).normal(0.1, 0.01, (2, 64, 64)).astype(np.float32)
    std[:, 20:30, 20:30] = 1.0  # one uncertain square per frame
    viewer.add_image(std, name=STD_NAME, metadata={OUTPUT_KEY: STD_ROLE})
    assert REGIONS_NAME not in viewer.layers  # a posterior run adds no regions layer...
    dock.show_tab("Annotation")  # ...until the annotation is shown
    assert REGIONS_NAME in viewer.layers
    assert viewer.layers[REGIONS_NAME].metadata["std_layer"] == STD_NAME
