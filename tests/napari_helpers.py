"""Helpers of the widget tests: open a plugin widget, run its job, read notifications."""

from napari.utils.notifications import notification_manager

PLUGIN = "napari-smlm-diffusion"
RAW = "Simulated SMLM stack"
TIMEOUT_MS = 60_000


def add_widget(viewer, name):
    """Open a plugin widget through napari's npe2 route (as the Plugins menu does)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def run_and_wait(qtbot, widget, **values):
    """Set widget values, press Run and wait until the job is over."""
    for name, value in values.items():
        getattr(widget, name).value = value
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def errors_since(count):
    """Messages of the error notifications after the first ``count`` ones."""
    return [str(n.message) for n in notification_manager.records[count:]
            if n.severity == "error"]


def notices_since(count):
    """Messages of all notifications after the first ``count`` ones."""
    return [str(n.message) for n in notification_manager.records[count:]]


def notification_count():
    """How many notifications napari has recorded so far."""
    return len(notification_manager.records)


def run_reacting(qtbot, widget, react):
    """Press Run, call ``react(message)`` for every message of the job, wait until it is over."""
    widget.start()
    widget.worker.yielded.connect(react)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
