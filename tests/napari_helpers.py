"""Helpers of the widget tests: open a plugin widget, run its job, read notifications."""

from napari.utils.notifications import notification_manager

from napari_smlm_diffusion.pretrained import weights_dir

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


def event_gaps_during(qtbot, widget, **values):
    """Run the widget's job (as :func:`run_and_wait`) while a 10 ms Qt timer ticks; return the
    gaps between ticks during the job and the job's duration (s)."""
    import time

    import numpy as np
    from qtpy.QtCore import QTimer

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    started = time.perf_counter()
    run_and_wait(qtbot, widget, **values)
    elapsed = time.perf_counter() - started
    timer.stop()
    return np.diff([started, *[t for t in ticks if t <= started + elapsed]]), elapsed


def first_outcome(job):
    """The outcome of a job that ends before its first frame (e.g. a failure at loading): only
    messages without frames done (the "loading models..." step) may come before it."""
    while True:
        try:
            message = next(job)
        except StopIteration as stop:
            return stop.value
        assert getattr(message, "done", 0) == 0, "the job processed frames"


#: The shipped denoiser's file (the widgets' weight fields take a path).
SHIPPED_DENOISER = str(weights_dir() / "denoiser.safetensors")
