"""Progress output for kprune's long operations, in the look of `keras.utils.Progbar`.

Every long kprune operation (pruning-at-init scoring, iterative structured
pruning, and whatever one-shot pruners or benchmarks opt in) reports through
`Progress`, so all of them behave the same:

* `verbose=0`: silent.
* `verbose=1`, interactive stream (a terminal, or a Jupyter kernel): one
  Keras-style bar redrawn in place with a carriage return,
  `SynFlow 37/100 ━━━━━━━──────────── 2s 31ms/round`, at most every
  `interval` seconds, finished by a newline.
* `verbose=1`, anything else (a log file, a CI job, a pipe, pytest's capture):
  a handful of full lines per operation, at 0%, 25%, 50%, 75% and 100%, so
  a 100-round SynFlow adds 5 lines to a log, not 100. No colour codes.
* `verbose=2`: only the final line (Keras' "one line per epoch" mode).

The final line always states completion (`- done`), or, when the operation
stopped early, how far it got (`- stopped at 37/100` or, inside a `with`
block left by an exception, `- failed (ValueError)`). Output goes to
`sys.stdout` (where Keras prints its progress) unless `stream` is given.

Example:
>>> with kprune.utils.progress.Progress(100, "SynFlow", verbose=1, unit="round") as p:
...     for _ in range(100):
...         p.update(1)
SynFlow   0/100 ────────────────────
SynFlow  25/100 ━━━━━─────────────── 0s 10ms/round
...
SynFlow 100/100 ━━━━━━━━━━━━━━━━━━━━ 1s 10ms/round - done
"""

from __future__ import annotations

import math
import re
import sys
import time

__all__ = ["Progress", "track"]

_MILESTONES = 4  # non-interactive lines at k/4 of the total
_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _is_interactive(stream):
    """A terminal, or an IPython/Jupyter kernel's output stream (which renders \\r)."""
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def _format_rate(seconds_per_unit, unit):
    # The same formatting as keras.utils.Progbar.
    if seconds_per_unit >= 1 or seconds_per_unit == 0:
        return f"{seconds_per_unit:.0f}s/{unit}"
    if seconds_per_unit >= 1e-3:
        return f"{seconds_per_unit * 1e3:.0f}ms/{unit}"
    return f"{seconds_per_unit * 1e6:.0f}us/{unit}"


def _format_duration(seconds):
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) > 1e-3 or value == 0 else f"{value:.4e}"
    return str(value)


class Progress:
    """Progress of one long operation: a Keras-style bar in a terminal, a few lines in a log.

    Use it as a context manager (`with Progress(...) as p:`) so the final
    line is printed even when the operation stops early, or call `close()`;
    reaching `total` finishes it too. Drop-in for `keras.utils.Progbar`
    where only `add(n)` is used.

    Args:
        total: number of steps of the operation (positive int), or None when
            unknown (then a log gets only the final line).
        description: what is running, printed at the start of every line
            (e.g. `"SynFlow"`).
        verbose: 0 silent, 1 progress (see the module docstring), 2 only the
            final line. True/False mean 1/0.
        unit: name of one step, shown in the rate (`"round"`, `"batch"`).
        stream: where to write (default `sys.stdout` at construction time).
        interactive: force the in-place bar (True) or the few-lines log mode
            (False); default: detected from `stream` (a TTY or a Jupyter
            kernel is interactive).
        interval: minimum seconds between two redraws of the interactive bar.
        width: bar width in characters (Keras' default, 20).

    Raises:
        ValueError: `total` is not None or a non-negative integer, or
            `verbose` is not 0, 1 or 2.

    Example:
    >>> with Progress(len(batches), "SNIP", verbose=1, unit="batch") as p:
    ...     for x, y in batches:
    ...         score(x, y)
    ...         p.update(1)
    """

    def __init__(self, total, description="", verbose=1, unit="step", stream=None,
                 interactive=None, interval=0.05, width=20):
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)
                                  or total < 0):
            raise ValueError(f"Progress: total must be None or a non-negative integer, "
                             f"got {total!r}.")
        if isinstance(verbose, bool):
            verbose = int(verbose)
        if verbose not in (0, 1, 2):
            raise ValueError(f"Progress: verbose must be 0 (silent), 1 (progress) or 2 (final "
                             f"line only), got {verbose!r}.")
        self.total = total
        self.description = str(description)
        self.verbose = verbose
        self.unit = unit
        self.stream = sys.stdout if stream is None else stream
        self.interactive = _is_interactive(self.stream) if interactive is None else interactive
        self.interval = interval
        self.width = width
        self.current = 0
        self.values = {}
        self.closed = False
        self._start = time.monotonic()
        self._after_first = None
        self._first_steps = 0
        self._last_draw = -math.inf
        self._drawn_width = 0
        self._milestone = 0
        if self.verbose == 1:
            if self.interactive:
                self._draw()
            elif self.total:
                self._line(self._text(final=False))

    # ------------------------------------------------------------------ API

    def update(self, n=1, **values):
        """Advances by `n` steps (an increment, unlike `Progbar.update(current)`).

        Args:
            n: steps completed since the last call (non-negative int).
            **values: numbers to show after the rate (`loss=0.31`); the
                latest value of each is shown.

        Returns:
            None.

        Example:
        >>> p.update(1, sparsity=0.5)
        """
        if self.closed:
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Progress.update: n must be a non-negative integer, got {n!r}.")
        if self.current == 0 and n > 0:
            self._after_first, self._first_steps = time.monotonic(), n
        self.current += n
        self.values.update(values)
        if self.total is not None and self.current >= self.total:
            self.close()
            return
        if self.verbose != 1:
            return
        if self.interactive:
            now = time.monotonic()
            if now - self._last_draw >= self.interval:
                self._draw()
        elif self.total:
            reached = self.current * _MILESTONES // self.total
            if reached > self._milestone:
                self._milestone = reached
                self._line(self._text(final=False))

    def add(self, n=1, values=None):
        """`keras.utils.Progbar.add` spelling of `update`: advances by `n` steps.

        Args:
            n: steps completed.
            values: optional list of `(name, value)` pairs.

        Returns:
            None.

        Example:
        >>> p.add(1, [("loss", 0.3)])
        """
        self.update(n, **dict(values or []))

    def close(self, error=None):
        """Prints the final line (once) and stops reporting.

        Args:
            error: optional exception that stopped the operation; the final
                line then says `failed (<type>)`.

        Returns:
            None.

        Example:
        >>> p.close()
        """
        if self.closed:
            return
        self.closed = True
        if self.verbose == 0:
            return
        text = self._text(final=True, error=error)
        if self.interactive and self.verbose == 1:
            self._draw(text)
            self.stream.write("\n")
            self._flush()
        else:
            self._line(text)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # A generator closed early (`break` out of `track`) stopped, it did not fail.
        self.close(error=None if isinstance(exc, GeneratorExit) else exc)
        return False

    # ------------------------------------------------------------ rendering

    def _seconds_per_unit(self, now):
        if not self.current:
            return 0.0
        # Like Progbar: leave the first (often compilation-heavy) step out of the rate.
        later = self.current - self._first_steps
        if self._after_first is not None and later > 0:
            return (now - self._after_first) / later
        return (now - self._start) / self.current

    def _text(self, final, error=None):
        now = time.monotonic()
        color = self.interactive and self.verbose == 1 and self._colors()
        parts = [self.description] if self.description else []
        if self.total:
            digits = len(str(self.total))
            count = f"{self.current:{digits}d}/{self.total}"
            filled = min(self.width, int(self.width * self.current / self.total))
            if color:
                count = f"\x1b[1m{count}\x1b[0m"
                bar = (f"\x1b[32m{'━' * filled}\x1b[0m" if filled else "") + \
                      f"\x1b[37m{'━' * (self.width - filled)}\x1b[0m"
            else:
                bar = "━" * filled + "─" * (self.width - filled)
            parts += [count, bar]
        else:
            parts.append(f"{self.current}/Unknown")
        if self.current == 0 and not final:  # the start line: nothing measured yet
            return " ".join(parts)
        rate = self._seconds_per_unit(now)
        if final or not self.total:
            timing = _format_duration(now - self._start)
        else:
            timing = _format_duration(rate * (self.total - self.current))
        if color:
            timing = f"\x1b[1m{timing}\x1b[0m"
        parts += [timing, _format_rate(rate, self.unit)]
        text = " ".join(parts)
        for key, value in self.values.items():
            text += f" - {key}: {_format_value(value)}"
        if final:
            if error is not None:
                text += f" - failed ({type(error).__name__})"
            elif self.total is None or self.current >= self.total:
                text += " - done"
            else:
                text += f" - stopped at {self.current}/{self.total}"
        return text

    def _colors(self):
        # Colour only on a real terminal (Jupyter renders it too, but stored
        # notebooks and logs should stay plain).
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:
            return False

    def _draw(self, text=None):
        text = self._text(final=False) if text is None else text
        visible = len(_ESCAPE.sub("", text))
        pad = " " * max(0, self._drawn_width - visible)
        self.stream.write("\r" + text + pad)
        self._drawn_width = visible
        self._last_draw = time.monotonic()
        self._flush()

    def _line(self, text):
        self.stream.write(text + "\n")
        self._flush()

    def _flush(self):
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()



def track(iterable, description="", verbose=1, total=None, unit="step", **kwargs):
    """Iterates over `iterable`, reporting one step per item with a `Progress`.

    Args:
        iterable: the items.
        description: what is running.
        verbose: 0, 1 or 2 as for `Progress`.
        total: number of items (default `len(iterable)` when it has one).
        unit: name of one item.
        **kwargs: other `Progress` arguments (`stream`, `interactive`).

    Returns:
        A generator over the items of `iterable`.

    Example:
    >>> for x, y in track(batches, "SNIP", unit="batch"):
    ...     score(x, y)
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total, description, verbose=verbose, unit=unit, **kwargs) as p:
        for item in iterable:
            yield item
            p.update(1)
