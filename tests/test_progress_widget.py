"""Issue 16 item 4: progress in the widget: bar, seconds per frame, time left, and the
model-loading step before the first frame."""

import pytest

from napari_helpers import TIMEOUT_MS, add_widget
from napari_smlm_diffusion._napari.widgets.jobs import Progress, duration, progress_text

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]


def test_progress_text_has_rate_and_time_left():
    assert progress_text(Progress(3, 10, seconds=6.0)) == (
        "3 / 10 frames, 2.00 s per frame, about 14 s left")
    assert progress_text(Progress(10, 10, seconds=5.0)) == "10 / 10 frames, 0.50 s per frame"
    assert progress_text(Progress(0, 10, "loading models on cpu...")) == (
        "loading models on cpu...")
    assert [duration(s) for s in (0.4, 59, 185, 7620)] == ["0 s", "59 s", "3 min 05 s",
                                                         "2 h 07 min"]


def test_kde_widget_shows_loading_then_bar_rate_and_eta(viewer, qtbot, untrained_weights):
    widget = add_widget(viewer, "KDE CNN")
    widget.frames.value, widget.device.value = "1-6", "cpu"
    widget.weights.value, widget.batch_size.value = untrained_weights, 2
    seen, handle = [], widget._on_message

    def spy(message):  # connected in start(), so no message is missed
        handle(message)
        seen.append((message, widget.status.value, widget.bar.max, widget.bar.value))

    widget._on_message = spy
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert widget.status.value.startswith("Done: 6 frames"), widget.status.value

    first, text, bar_max, _ = seen[0]  # before the first frame: the loading step, busy bar
    assert isinstance(first, Progress) and first.done == 0
    assert text == "loading the model on cpu..." and bar_max == 0
    frames = [(m, t, top, value) for m, t, top, value in seen
              if isinstance(m, Progress) and m.done]
    assert [m.done for m, *_ in frames] == [2, 4, 6]
    assert all(top == 6 and value == m.done for m, _, top, value in frames)
    assert "2 / 6 frames" in frames[0][1] and "s per frame, about" in frames[0][1]
    assert frames[0][1].endswith("left") and "left" not in frames[-1][1]
    assert widget.bar.value == 6 and widget.run.enabled
