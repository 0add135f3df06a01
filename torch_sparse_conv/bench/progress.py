"""A dependency-free progress bar for long sweeps (stderr).

On a terminal it redraws one line (bar, count, elapsed, estimate of what is left, last cell);
into a file or a pipe it writes one line per step, so logs stay readable."""
import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """``Progress(total, label)``; ``step(text)`` after each cell; ``close()`` at the end."""

    def __init__(self, total: int, label: str = "", stream=None, width: int = 24,
                 enabled: bool = True):
        self.total, self.label, self.width, self.enabled = max(total, 1), label, width, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self, text: str = "") -> str:
        """The bar as text: ``label [#####-----] 3/10 0:04 left 0:06 text``."""
        filled = int(self.width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        return (f"{self.label} [{bar}] {self.done}/{self.total} {_clock(elapsed)} "
                f"left {_clock(left)} {text}").rstrip()

    def step(self, text: str = "") -> None:
        self.done = min(self.done + 1, self.total)
        if not self.enabled:
            return
        if self.interactive:
            self.stream.write("\r\033[K" + self.line(text))
        else:
            self.stream.write(self.line(text) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
