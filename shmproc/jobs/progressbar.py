"""The progress bar of Pool.map(progress=True): tqdm when installed, else one
plain line on stderr, redrawn at most every REDRAW_S seconds."""
from __future__ import annotations

import sys
import time

REDRAW_S = 0.1


class ProgressBar:
    def __init__(self, total, desc: str = "", stream=None):
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.shown = 0
        self.last_draw = 0.0
        self.started = time.monotonic()
        self.tqdm = None
        self.total = total
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            self.tqdm = tqdm(total=total, desc=desc, file=self.stream, unit="task")

    def update(self, done: int, total):
        self.total = total
        if self.tqdm is not None:
            if total is not None and self.tqdm.total != total:
                self.tqdm.total = total
            if done > self.shown:
                self.tqdm.update(done - self.shown)
                self.shown = done
            return
        self.shown = done
        now = time.monotonic()
        if now - self.last_draw >= REDRAW_S:
            self.last_draw = now
            self._draw(total)

    def _draw(self, total, end=""):
        rate = self.shown / max(time.monotonic() - self.started, 1e-9)
        if total:
            width = 30
            filled = int(width * self.shown / total)
            line = (f"{self.desc}: {100 * self.shown // total:3d}% "
                    f"|{'#' * filled}{'.' * (width - filled)}| {self.shown}/{total} "
                    f"[{rate:,.0f} tasks/s]")
        else:
            line = f"{self.desc}: {self.shown} [{rate:,.0f} tasks/s]"
        self.stream.write("\r" + line + end)
        self.stream.flush()

    def close(self):
        if self.tqdm is not None:
            self.tqdm.close()
            return
        self._draw(self.total, end="\n")
