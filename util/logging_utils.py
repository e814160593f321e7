"""Plain-stdout logging and progress lines in the original ELECTRA's format."""

import datetime
import sys
import time
from collections.abc import Callable, Mapping


def log(*args) -> None:
    """Writes the space-joined arguments as one line to stdout and flushes."""
    sys.stdout.write(" ".join(map(str, args)) + "\n")
    sys.stdout.flush()


def heading(*args) -> None:
    """Logs the arguments between two 80-character '=' rules."""
    log(80 * "=")
    log(*args)
    log(80 * "=")


def secs_to_str(secs: float) -> str:
    """Formats seconds as h:mm:ss with leading zeros and empty fields trimmed.

    Same text as the original's training_utils.secs_to_str: 5 -> "5", 65 -> "1:05",
    3725 -> "1:02:05", 4110728 -> "47 days, 13:52:08".
    """
    text = str(datetime.timedelta(seconds=int(round(secs))))
    # The original drops "0:" then "0" twice: "0:00:05" -> "00:05" -> "0:05" -> "05" -> "5".
    for prefix in ("0:", "0", "0:", "0"):
        if text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix):]
    return text


def _format_extra(extra: str | Mapping[str, float]) -> str:
    if isinstance(extra, Mapping):
        return "".join(f" - {name}: {value}" if isinstance(value, int)
                       else f" - {name}: {value:.4f}" for name, value in extra.items())
    return f" - {extra}" if extra else ""


class Progress:
    """Progress lines `<done>/<total> = <pct>%, SPS: <rate>, ELAP: <t>, ETA: <t>`.

    The rate counts only units done since this object was created (`start`), so a
    resumed run reports its own speed. The rate label is "SPS" (steps per second,
    the original's training log) when `unit_name` is "steps", else "<unit_name>/s".
    """

    def __init__(self, total: int, unit_name: str = "steps", start: int = 0,
                 prefix: str = "", quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        """Starts the clock.

        Args:
            total: number of units when the work is complete.
            unit_name: what is counted ("steps", "files", ...); picks the rate label.
            start: units already done before this object existed (resumed training).
            prefix: text put before every line, e.g. "Job 0:".
            quiet: build the lines but do not print them.
            clock: seconds source; injectable for tests.
        """
        self.total = total
        self.unit_name = unit_name
        self.start = start
        self.prefix = prefix
        self.quiet = quiet
        self._clock = clock
        self._start_time = clock()

    @property
    def rate_label(self) -> str:
        return "SPS" if self.unit_name == "steps" else f"{self.unit_name}/s"

    def update(self, done: int, extra: str | Mapping[str, float] = "") -> str:
        """Builds (and unless quiet, logs) the progress line for `done` units.

        Args:
            done: units done so far, counting `start`.
            extra: appended as " - <extra>"; a mapping gives " - name: value" per item
                with 4 decimals, as the original appended the loss (ints as they are).
        Returns:
            The line, without the trailing newline.
        """
        elapsed = max(self._clock() - self._start_time, 0.0)
        pct = 100.0 * done / self.total if self.total else 100.0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        # Without a measured rate there is no honest estimate of the time left.
        eta = secs_to_str((self.total - done) / rate) if rate > 0 else "?"
        line = (f"{done}/{self.total} = {pct:.1f}%, {self.rate_label}: {rate:.1f}, "
                f"ELAP: {secs_to_str(elapsed)}, ETA: {eta}{_format_extra(extra)}")
        if self.prefix:
            line = f"{self.prefix} {line}"
        if not self.quiet:
            log(line)
        return line
