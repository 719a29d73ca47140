"""The compiler's error for input it refuses (a leaf module: the front end, the back end and the CLI all
raise it, and none of them imports another for it)."""

from __future__ import annotations


class CompileError(ValueError):
    """A model or graph the accelerator cannot run, or a compile option it cannot honour; the message names
    the layer (or op) and the limit."""
