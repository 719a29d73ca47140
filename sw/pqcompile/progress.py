"""Progress of long work: a live bar with an ETA on a terminal, a few plain lines in a log or CI.

One rule for every PQA command (docs/programmers_guide.md, "Progress output"), see :func:`mode`:

* ``"bar"``: the stream is a terminal (``isatty()``), ``CI`` is not set (unset, empty, ``0``, ``false`` or
  ``no``), ``PQA_PROGRESS`` is not ``0`` / ``false`` / ``no`` / ``off``, ``TERM`` is not ``dumb`` and the
  command was not asked to be quiet: a tqdm bar redrawn in place, with the elapsed time and the ETA.
* ``"lines"``: otherwise (a pipe, a log file, CI): a few plain lines, never a carriage return: a line each
  time the work passes another ``every`` fraction of its total (with the elapsed time and the ETA) and one
  at the end.
* ``"off"``: ``quiet``: nothing.

Three shapes of work: :class:`Progress` (counted units: jobs, runs, epochs), :func:`timed` (one blocking call
with an expected duration: a long simulation in a subprocess) and :class:`Phases` (named steps in order:
compiling a network). Text the caller prints while a bar is shown goes through ``write`` (or ``suspend``), so
the bar is cleared first and redrawn below it. Bars and lines go to ``stream`` (default: standard output,
beside the command's other output; error messages stay alone on standard error).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import Literal, TextIO

from tqdm import tqdm

from .clitools import duration, eta

Mode = Literal["bar", "lines", "off"]
OFF_WORDS = ("0", "false", "no", "off")
TICK_S = 0.5  # how often a shown bar is redrawn while the work blocks (elapsed time, ETA)


def _set(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", *OFF_WORDS)


def mode(stream: TextIO | None = None, quiet: bool = False, env: Mapping[str, str] | None = None) -> Mode:
    """How progress is shown on ``stream`` (default standard output) in environment ``env`` (default
    ``os.environ``): ``"off"`` when quiet, ``"bar"`` on a terminal outside CI, else ``"lines"``."""
    if quiet:
        return "off"
    env = os.environ if env is None else env
    stream = sys.stdout if stream is None else stream
    if _set(env.get("CI")) or env.get("PQA_PROGRESS", "").strip().lower() in OFF_WORDS:
        return "lines"
    if env.get("TERM", "") == "dumb":
        return "lines"
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    return "bar" if tty else "lines"


def seconds(s: float) -> str:
    """A short elapsed time: ``"4.2s"`` below 10 s, else :func:`pqcompile.clitools.duration` (``"1m35s"``)."""
    return f"{max(0.0, s):.1f}s" if s < 10 else duration(s)


class _Ticker:
    """Redraws a bar every ``TICK_S`` from a daemon thread (the work may block for minutes), after calling
    ``before`` (which may move the bar: elapsed time against an expected duration)."""

    def __init__(self, bar: tqdm, before: Callable[[], None] | None = None, interval: float | None = None) -> None:
        self._bar, self._before, self._interval = bar, before, TICK_S if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pqa-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._bar.get_lock():
                if self._bar.disable:
                    return
                if self._before is not None:
                    self._before()
                self._bar.refresh(nolock=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _bar(stream: TextIO, total: float | None, desc: str, unit: str, leave: bool, fmt: str | None = None) -> tqdm:
    # smoothing=0: the ETA assumes the average rate since the start (the work comes in uneven pieces: batches)
    return tqdm(total=total, desc=desc, unit=unit or "it", file=stream, leave=leave, smoothing=0,
                dynamic_ncols=True, mininterval=0.2, bar_format=fmt)


class _Live:
    """What a :class:`Progress` and a :class:`Phases` share: the stream and its mode, the bar (bar mode) with
    its ticker, the caller's own lines printed above the bar, and closing once."""

    def __init__(self, stream: TextIO | None, quiet: bool) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.mode: Mode = mode(self.stream, quiet)
        self._closed = False
        self._bar: tqdm | None = None
        self._ticker: _Ticker | None = None

    def _start_bar(self, bar: tqdm) -> None:
        self._bar = bar
        self._ticker = _Ticker(bar)

    def write(self, text: str) -> None:
        """Print a line of the caller's own (above the bar, which is redrawn below it)."""
        if self._bar is not None and not self._closed:
            tqdm.write(text, file=self.stream)
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)

    def _finish(self) -> bool:
        """Stop the ticker and close the bar; False when already closed."""
        if self._closed:
            return False
        self._closed = True
        if self._ticker is not None:
            self._ticker.stop()
        if self._bar is not None:
            self._bar.close()
        return True


class Progress(_Live):
    """Counted work (``total`` units: jobs, runs, epochs): ``update(n, note)`` as units finish, ``close()``
    (or use it as a context manager). Lines mode (with ``lines``): ``"<desc>: 50/200 jobs (25%), <note>,
    1m02s, ETA 3m06s"`` each time another ``every`` fraction is passed (``every=0``: at every update) and
    ``"<desc>: 200/200 jobs, <note>, done in 4m10s"`` at the end (``stopped after`` on an exception).
    ``lines=False``: nothing in lines mode (for work that logs its own lines). ``leave``: keep the finished
    bar on the terminal (else it is cleared)."""

    def __init__(self, desc: str, total: int | None = None, *, unit: str = "", stream: TextIO | None = None,
                 quiet: bool = False, every: float = 0.25, lines: bool = True, leave: bool = True) -> None:
        super().__init__(stream, quiet)
        self.desc, self.total, self.unit, self.every, self.lines = desc, total, unit, every, lines
        self.n = 0
        self.note = ""
        self._t0 = time.perf_counter()
        self._next = every  # the next fraction of the total that prints a line
        if self.mode == "bar":
            self._start_bar(_bar(self.stream, total, desc, unit, leave))

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _count(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.n}/{self.total}{unit}" if self.total else f"{self.n}{unit}"

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more units done; ``note`` (kept until the next one) says how it goes: ``"2 failing"``."""
        self.n += n
        if note is not None:
            self.note = note
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
            return
        if self.mode != "lines" or not self.lines or not self.total or self.n >= self.total:
            return
        frac = self.n / self.total
        if frac + 1e-12 < self._next:
            return
        while self.every > 0 and self._next <= frac + 1e-12:
            self._next += self.every
        note_s = f", {self.note}" if self.note else ""
        el = self.elapsed()
        self._say(f"{self.desc}: {self._count()} ({100 * frac:.0f}%){note_s}, {duration(el)}, "
                  f"{eta(self.n, self.total, el)}")

    def suspend(self) -> AbstractContextManager[None]:
        """A context in which the caller may print as it likes (the bar is cleared, then redrawn)."""
        if self._bar is not None and not self._closed:
            return tqdm.external_write_mode(file=self.stream)
        return nullcontext()

    def close(self, ok: bool = True) -> None:
        if self._finish() and self._bar is None and self.mode == "lines" and self.lines:
            note_s = f", {self.note}" if self.note else ""
            self._say(f"{self.desc}: {self._count()}{note_s}, {'done in' if ok else 'stopped after'} "
                      f"{duration(self.elapsed())}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(ok=kind is None)


@contextmanager
def timed(desc: str, expected_s: float | None, *, detail: str = "", stream: TextIO | None = None,
          quiet: bool = False) -> Iterator[None]:
    """One blocking piece of work expected to take about ``expected_s`` seconds (None: unknown). Bar mode: a
    bar of the elapsed time against the expected one, with the time left (``longer than estimated`` once
    past it), cleared at the end. Lines mode: ``"<desc>: about 1m35s expected (<detail>)"`` at the start
    and ``"<desc>: done in 1m41s"`` (``stopped after`` on an exception) at the end."""
    out = sys.stdout if stream is None else stream
    how = mode(out, quiet)
    t0 = time.perf_counter()
    detail_s = f" ({detail})" if detail else ""
    if how == "lines":
        what = f"about {seconds(expected_s)} expected" if expected_s is not None and expected_s > 0 else "started"
        print(f"{desc}: {what}{detail_s}", file=out, flush=True)
    bar: tqdm | None = None
    ticker: _Ticker | None = None
    if how == "bar":
        total = expected_s if expected_s is not None and expected_s > 0 else None
        fmt = ("{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}" if total
               else "{desc}: {elapsed}{postfix}")
        bar = _bar(out, total, desc, "s", leave=False, fmt=fmt)
        bar.set_postfix_str(detail, refresh=False)
        shown = bar

        def move() -> None:
            el = time.perf_counter() - t0
            if total is None:
                return
            if el >= total:
                shown.n = total
                shown.set_postfix_str("longer than estimated", refresh=False)
            else:
                shown.n = el

        ticker = _Ticker(bar, move)
    ok = False
    try:
        yield
        ok = True
    finally:
        if ticker is not None and bar is not None:
            ticker.stop()
            bar.close()
        if how == "lines":
            print(f"{desc}: {'done in' if ok else 'stopped after'} {seconds(time.perf_counter() - t0)}",
                  file=out, flush=True)


class Phases(_Live):
    """Named steps in order (compiling a network: load, quantize, emit, simulate, check, write). Bar mode: a
    bar over the steps naming the one running and the elapsed time, cleared at the end. Lines mode: nothing
    while it runs (the caller prints its own start and end); :meth:`summary` gives the time of each step
    (``"load 0.2s, quantize 3.1s, ..."``) for the caller's last line."""

    def __init__(self, desc: str, names: Sequence[str], *, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        super().__init__(stream, quiet)
        self.desc, self.names = desc, list(names)
        self.times: dict[str, float] = {}
        if self.mode == "bar":
            self._start_bar(_bar(self.stream, len(self.names), desc, "step", leave=False,
                                 fmt="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}"))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Run one named step (its time goes to ``times``)."""
        if self._bar is not None:
            self._bar.set_description_str(f"{self.desc} [{name}]")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0
        if self._bar is not None:
            self._bar.update(1)

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds(t)}" for name, t in self.times.items())

    def close(self) -> None:
        self._finish()

    def __enter__(self) -> Phases:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
