"""Video time is the video's own: a phone-style variable-frame-rate clip (30 fps for 1 s, then 10 fps for 3 s) is
read at its frames' timestamps, alerts fire after the configured seconds of that time, and written videos keep it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.video_sources import TimedVideoWriter, VideoSource
from facemask.alerts import MaskAlerts

TIMES = [k / 30 for k in range(30)] + [1 + k / 10 for k in range(30)]  # 60 frames over 4 s, average 15 fps


def _vfr_clip(path):
    with TimedVideoWriter(path, 15, (64, 48)) as writer:
        for k, t in enumerate(TIMES):
            writer.write(np.full((48, 64, 3), (k * 4) % 256, np.uint8), t)
    return path


def _own_times(path):
    capture, times = cv2.VideoCapture(str(path)), []
    while capture.read()[0]:
        times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    return times


def test_frames_of_a_variable_frame_rate_file_carry_their_own_times(tmp_path):
    clip = _vfr_clip(tmp_path / "vfr.mp4")
    np.testing.assert_allclose(_own_times(clip), TIMES, atol=1e-3)  # the writer kept every frame's time
    frames = list(VideoSource(str(clip)).frames())
    assert len(frames) == 60
    np.testing.assert_allclose([f.time_s for f in frames], TIMES, atol=1e-3)  # not index / 15 fps
    assert frames[45].time_s == pytest.approx(2.5, abs=1e-3)  # index / fps would say 3.0


def test_an_alert_fires_after_the_configured_seconds_of_the_videos_own_time(tmp_path):
    frames = list(VideoSource(str(_vfr_clip(tmp_path / "vfr.mp4"))).frames())
    alerts = MaskAlerts(["with_mask", "without_mask"], ["without_mask"], alert_after_s=2.0, window=1)
    events = [e for f in frames for e in alerts.update(f.index, f.time_s, [(7, (0, 0, 10, 10), 0.9, 1)])]
    assert len(events) == 1
    # unmasked from 0 s: the first frame at or after 2.0 s of the video's time is frame 40 (1 + 10/10 s), where
    # index / fps (frame 30 at 2.0 s) fired after 1.0 s of real time
    assert (events[0].frame, events[0].time_s) == (40, pytest.approx(2.0, abs=1e-3))
