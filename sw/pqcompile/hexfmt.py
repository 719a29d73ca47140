"""PQA memory images: ``$readmemh``-compatible hex text.

Format (see docs/file_formats.md):
- one memory word per data line, ``2 * word_bytes`` hex digits, the word's bytes little-endian
  (byte address ``a`` is byte ``a % word_bytes`` of word ``a // word_bytes``);
- ``@<hex>`` sets the word address of the next data line (addresses are in words, as ``$readmemh`` wants);
- ``//`` starts a comment; blank lines are ignored.
A word may be written once only; the reader rejects anything else with the file's line number.

Comment text given to the writer (titles, segment descriptions: often user text such as a model's name) is
escaped by :func:`escape_comment`, so a comment is always one line and the file is pure ASCII.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .clitools import printable

WORD_BYTES = 8
_ADDR = re.compile(r"@([0-9a-fA-F]+)$")
_DATA = re.compile(r"[0-9a-fA-F]+$")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # line ends as editors count them (str.splitlines also splits at \f, \x1c, ...)


class HexFormatError(ValueError):
    """A memory image that does not follow the format; the message names file and line."""


class Image(dict[int, int]):
    """``{word_address: word}`` as read from a file, remembering where each word came from: ``name`` (the file)
    and ``lines`` (``{word_address: line number}``), so that later checks (:func:`to_bytes`) name file:line.
    It is a plain ``dict`` otherwise (equality, iteration, copies)."""

    def __init__(self, name: str = "<image>") -> None:
        super().__init__()
        self.name = name
        self.lines: dict[int, int] = {}

    def where(self, word_address: int) -> str:
        """``"FILE:LINE"`` of the line that wrote ``word_address`` (just ``FILE`` when it is not known)."""
        line = self.lines.get(word_address)
        return self.name if line is None else f"{self.name}:{line}"


def escape_comment(text: object) -> str:
    """``text`` as one line of printable ASCII (``clitools.printable``, not cut)."""
    return printable(text, None)


def format_image(
    segments: Iterable[tuple[int, bytes | np.ndarray, str]], word_bytes: int = WORD_BYTES, title: str = ""
) -> str:
    """Render ``(byte_address, data, comment)`` segments; each address must be word aligned. ``title`` and the
    comments are written escaped (:func:`escape_comment`): one line each, ASCII."""
    lines = [f"// PQA memory image: {word_bytes * 8}-bit words, little-endian, @ addresses in words"]
    if title:
        lines.append(f"// {escape_comment(title)}")
    for addr, data, comment in sorted(segments, key=lambda s: s[0]):
        if addr % word_bytes:
            raise ValueError(f"segment {escape_comment(repr(comment))} at {addr:#x} is not {word_bytes}-byte aligned")
        raw = bytes(np.asarray(data, dtype=np.uint8).tobytes() if isinstance(data, np.ndarray) else data)
        raw += b"\0" * (-len(raw) % word_bytes)
        lines.append(f"// {escape_comment(comment)}: {len(raw)} bytes at byte address {addr:#x}")
        lines.append(f"@{addr // word_bytes:08x}")
        for i in range(0, len(raw), word_bytes):
            lines.append(raw[i : i + word_bytes][::-1].hex())
    return "\n".join(lines) + "\n"


def write_image(path: str | os.PathLike[str], segments: Iterable[tuple[int, bytes | np.ndarray, str]],
                word_bytes: int = WORD_BYTES, title: str = "") -> None:
    Path(path).write_text(format_image(segments, word_bytes, title), encoding="ascii")


def parse_image(text: str, name: str = "<image>", word_bytes: int = WORD_BYTES) -> Image:
    """Return ``{word_address: word}`` (an :class:`Image`, which also remembers each word's line); raise
    HexFormatError naming ``name`` and the line."""
    words = Image(name)
    addr = 0
    digits = 2 * word_bytes
    for lineno, line in enumerate(_NEWLINE.split(text), 1):
        body = line.split("//", 1)[0].strip()
        if not body:
            continue
        if body.startswith("@"):
            m = _ADDR.match(body)
            if not m:
                raise HexFormatError(f"{name}:{lineno}: bad address record {body!r}")
            addr = int(m.group(1), 16)
            continue
        for tok in body.split():
            if not _DATA.match(tok):
                raise HexFormatError(f"{name}:{lineno}: {tok!r} is not a hex word")
            if len(tok) != digits:
                raise HexFormatError(f"{name}:{lineno}: word {tok!r} has {len(tok)} digits, expected {digits}")
            if addr in words:
                raise HexFormatError(f"{name}:{lineno}: word address {addr:#x} written twice")
            words[addr] = int(tok, 16)
            words.lines[addr] = lineno
            addr += 1
    return words


def read_image(path: str | os.PathLike[str], word_bytes: int = WORD_BYTES) -> Image:
    """:func:`parse_image` of the file ``path`` (ASCII text; HexFormatError naming file and line otherwise)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = len(_NEWLINE.split(data[: exc.start].decode("ascii")))  # counted as parse_image counts lines
        raise HexFormatError(f"{path}:{line}: not an ASCII hex file ({exc.reason} at byte {exc.start})") from None
    return parse_image(text, str(path), word_bytes)


def to_bytes(words: Mapping[int, int], size: int, word_bytes: int = WORD_BYTES) -> np.ndarray:
    """Flatten an image into a zero-filled byte array of ``size`` bytes. A word beyond the memory is a
    HexFormatError that names ``FILE:LINE:`` of the line that wrote it when ``words`` is an :class:`Image`
    (as :func:`read_image` and :func:`parse_image` return)."""
    mem = np.zeros(size, dtype=np.uint8)
    for waddr, w in words.items():
        base = waddr * word_bytes
        if base + word_bytes > size:
            where = f"{words.where(waddr)}: " if isinstance(words, Image) else ""
            raise HexFormatError(f"{where}word address {waddr:#x} (byte address {base:#x}) lies beyond the "
                                 f"{size}-byte memory")
        mem[base : base + word_bytes] = np.frombuffer(w.to_bytes(word_bytes, "little"), dtype=np.uint8)
    return mem
