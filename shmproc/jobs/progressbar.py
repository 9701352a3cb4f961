"""Progress of a map call: `progress=` is True (a bar on stderr), a dict of
tqdm options, or a callable taking (done, total).

The bar is tqdm's (tqdm.auto: notebooks get the widget) when tqdm is
installed, else a plain line on stderr: redrawn in place at most every
REDRAW_S on a terminal, or, when stderr is not a terminal (a log file, CI),
a new line at most every LINE_S, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Callable, TextIO

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    #: What `progress=` takes: True/False (a bar or none), a dict of tqdm's
    #: options, or a callable taking (done, total); total is None while unknown.
    ProgressOption: TypeAlias = bool | dict[str, Any] | Callable[[int, int | None], object] | None
    #: What make() gives: something updated with (done, total), then closed.
    Reporter: TypeAlias = "_Callback | ProgressBar"

__all__ = ["make", "check", "ProgressBar"]

REDRAW_S = 0.1
LINE_S = 2.0


def check(progress: object) -> None:
    """Refuse what progress= cannot be, at the call (not when results come)."""
    if progress is None or isinstance(progress, (bool, dict)) or callable(progress):
        return
    raise TypeError(f"progress must be True/False, a dict of tqdm options or a callable "
                    f"taking (done, total), not {type(progress).__name__}")


def make(progress: ProgressOption, total: int | None, desc: str) -> Reporter | None:
    """The progress reporter a call asked for, or None."""
    check(progress)
    if not progress and not isinstance(progress, dict):
        return None
    if callable(progress) and not isinstance(progress, (bool, dict)):
        return _Callback(progress, total)
    options = progress if isinstance(progress, dict) else {}
    return ProgressBar(total, desc, options=options)


class _Callback:
    """progress=fn: fn(done, total) as results come, and once at the end."""

    def __init__(self, fn: Callable[[int, int | None], object], total: int | None) -> None:
        self.fn = fn
        self.total = total
        self.shown = -1

    def update(self, done: int, total: int | None) -> None:
        self.total = total
        if done != self.shown:
            self.shown = done
            self.fn(done, total)

    def close(self) -> None:
        pass


class ProgressBar:
    def __init__(self, total: int | None, desc: str = "", stream: TextIO | None = None,
                 options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.desc = options.pop("desc", desc)
        self.stream = options.pop("file", None) or stream or sys.stderr
        self.shown = 0
        self.last_draw = 0.0
        self.started = time.monotonic()
        self.tqdm: Any = None
        self.total = total
        isatty = getattr(self.stream, "isatty", None)
        self.in_place = bool(isatty and isatty())
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            options.setdefault("unit", "task")
            self.tqdm = tqdm(total=total, desc=self.desc, file=self.stream, **options)

    def update(self, done: int, total: int | None) -> None:
        self.total = total
        if self.tqdm is not None:
            if total is not None and self.tqdm.total != total:
                self.tqdm.total = total
            if done > self.shown:
                self.tqdm.update(done - self.shown)
                self.shown = done
            return
        changed = done != self.shown
        self.shown = done
        now = time.monotonic()
        if changed and now - self.last_draw >= (REDRAW_S if self.in_place else LINE_S):
            self.last_draw = now
            self._draw(total)

    def _draw(self, total: int | None, end: str = "") -> None:
        rate = self.shown / max(time.monotonic() - self.started, 1e-9)
        if total:
            width = 30
            filled = min(width, int(width * self.shown / total))
            left = max(total - self.shown, 0)
            eta = f", ETA {_clock(left / rate)}" if left and rate > 0 else ""
            line = (f"{self.desc}: {min(100, 100 * self.shown // total):3d}% "
                    f"|{'#' * filled}{'.' * (width - filled)}| {self.shown}/{total} "
                    f"[{rate:,.0f} tasks/s{eta}]")
        else:
            line = f"{self.desc}: {self.shown} [{rate:,.0f} tasks/s]"
        if self.in_place:
            self.stream.write("\r" + line + end)
        else:
            self.stream.write(line + "\n")        # not a terminal: one line per update
        self.stream.flush()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
            return
        self._draw(self.total, end="\n")


def _clock(seconds: float) -> str:
    """12:05 (minutes:seconds), or 1:02:03 past an hour."""
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
