"""What every PQA command shares: one-line error messages with user text escaped.

Exit statuses (docs/programmers_guide.md, "Exit statuses"): 0 success, 2 bad input (one line
``<prog>: error: ...`` naming the file and field, nothing written), 1 an internal error or a failed check.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1  # an internal error or a failed check
EXIT_BAD_INPUT = 2


def printable(text: object, limit: int | None = 200) -> str:
    """``text`` as one line of printable ASCII, for a message, a report or a comment in a file: characters
    0x20..0x7e pass (a backslash too, so escaping twice changes nothing), every other one (newline, CR, other
    control characters, non-ASCII) becomes the backslash escape Python's ``unicode_escape`` writes (``\\n``,
    ``\\x07``, ``\\xe9``, ``\\u2028``), so a user string can neither break a line nor send terminal control
    codes; cut to ``limit`` characters (None: not cut)."""
    out = "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in str(text))
    return out if limit is None or len(out) <= limit else out[: limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``<prog>: error: ... (see --help)``, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {printable(message, 400)} (see --help)\n")


def fail(prog: str, message: object, status: int = EXIT_BAD_INPUT) -> int:
    """Print ``<prog>: error: <message>`` (one line, escaped) on stderr; return ``status``."""
    print(f"{prog}: error: {printable(message, 1000)}", file=sys.stderr)
    return status


def duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``3700`` -> ``1h01m`` (the times of ``pqcompile.progress``'s plain lines)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta(done: float, total: float, elapsed: float) -> str:
    """The remaining time of work that went at a steady rate: ``"ETA 1m35s"`` (``"ETA ?"`` before any). Only
    ``pqcompile.progress`` prints it (its plain lines; its bars use tqdm's own): a command shows progress through
    that module, never with an ETA line of its own."""
    if done <= 0 or total <= 0:
        return "ETA ?"
    return f"ETA {duration(elapsed * (total - done) / done)}"
