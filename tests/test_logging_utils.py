"""Tests for util/logging_utils: the original's time format and progress line."""

import datetime
import re

import pytest

from util import logging_utils


def _original_secs_to_str(secs):
    """The original training_utils.secs_to_str, as regexes, used as the oracle."""
    s = str(datetime.timedelta(seconds=int(round(secs))))
    for pattern in ("^0:", "^0", "^0:", "^0"):
        s = re.sub(pattern, "", s)
    return s


@pytest.mark.parametrize("secs, text", [
        (0, "0"), (5, "5"), (59.6, "1:00"), (65, "1:05"), (600, "10:00"),
        (3725, "1:02:05"), (36000, "10:00:00"), (4110728, "47 days, 13:52:08"),
        (86400, "1 day, 0:00:00")])
def test_secs_to_str_known_values(secs, text):
    assert logging_utils.secs_to_str(secs) == text


def test_secs_to_str_matches_original_regexes():
    for secs in list(range(0, 4000, 7)) + [86399, 86400, 90061, 10 ** 7]:
        assert logging_utils.secs_to_str(secs) == _original_secs_to_str(secs)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_line_format_and_rate(capsys):
    clock = FakeClock()
    progress = logging_utils.Progress(1000, "steps", clock=clock)
    clock.now += 65.0
    line = progress.update(130, extra={"loss": 1.23456})
    # 130 steps in 65 s = 2 SPS; 870 left at 2/s = 435 s = 7:15.
    assert line == "130/1000 = 13.0%, SPS: 2.0, ELAP: 1:05, ETA: 7:15 - loss: 1.2346"
    assert capsys.readouterr().out == line + "\n"


def test_progress_counts_rate_from_start_and_uses_unit_label():
    clock = FakeClock()
    progress = logging_utils.Progress(10, "files", start=4, prefix="Job 1:",
                                                                        quiet=True, clock=clock)
    clock.now += 10.0
    line = progress.update(6, extra="40 examples written")
    assert line == ("Job 1: 6/10 = 60.0%, files/s: 0.2, ELAP: 10, ETA: 20 - "
                    "40 examples written")


def test_progress_without_elapsed_time_has_unknown_eta():
    progress = logging_utils.Progress(3, "files", quiet=True, clock=FakeClock())
    assert progress.update(0) == "0/3 = 0.0%, files/s: 0.0, ELAP: 0, ETA: ?"


def test_heading(capsys):
    logging_utils.heading("Config:")
    assert capsys.readouterr().out == "=" * 80 + "\nConfig:\n" + "=" * 80 + "\n"
