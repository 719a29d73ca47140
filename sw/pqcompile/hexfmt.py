"""PQA memory images: ``$readmemh``-compatible hex text.

Format (see docs/file_formats.md):
- one memory word per data line, ``2 * word_bytes`` hex digits, the word's bytes little-endian
  (byte address ``a`` is byte ``a % word_bytes`` of word ``a // word_bytes``);
- ``@<hex>`` sets the word address of the next data line (addresses are in words, as ``$readmemh`` wants);
- ``//`` starts a comment; blank lines are ignored.
A word may be written once only; the reader rejects anything else with the file's line number.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

WORD_BYTES = 8
_ADDR = re.compile(r"@([0-9a-fA-F]+)$")
_DATA = re.compile(r"[0-9a-fA-F]+$")


class HexFormatError(ValueError):
    """A memory image that does not follow the format; the message names file and line."""


def format_image(
    segments: Iterable[tuple[int, bytes | np.ndarray, str]], word_bytes: int = WORD_BYTES, title: str = ""
) -> str:
    """Render ``(byte_address, data, comment)`` segments; each address must be word aligned."""
    lines = [f"// PQA memory image: {word_bytes * 8}-bit words, little-endian, @ addresses in words"]
    if title:
        lines.append(f"// {title}")
    for addr, data, comment in sorted(segments, key=lambda s: s[0]):
        if addr % word_bytes:
            raise ValueError(f"segment {comment!r} at {addr:#x} is not {word_bytes}-byte aligned")
        raw = bytes(np.asarray(data, dtype=np.uint8).tobytes() if isinstance(data, np.ndarray) else data)
        raw += b"\0" * (-len(raw) % word_bytes)
        lines.append(f"// {comment}: {len(raw)} bytes at byte address {addr:#x}")
        lines.append(f"@{addr // word_bytes:08x}")
        for i in range(0, len(raw), word_bytes):
            lines.append(raw[i : i + word_bytes][::-1].hex())
    return "\n".join(lines) + "\n"


def write_image(path: str | os.PathLike[str], segments: Iterable[tuple[int, bytes | np.ndarray, str]],
                word_bytes: int = WORD_BYTES, title: str = "") -> None:
    Path(path).write_text(format_image(segments, word_bytes, title), encoding="ascii")


def parse_image(text: str, name: str = "<image>", word_bytes: int = WORD_BYTES) -> dict[int, int]:
    """Return ``{word_address: word}``; raise HexFormatError naming ``name`` and the line."""
    words: dict[int, int] = {}
    addr = 0
    digits = 2 * word_bytes
    for lineno, line in enumerate(text.splitlines(), 1):
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
            addr += 1
    return words


def read_image(path: str | os.PathLike[str], word_bytes: int = WORD_BYTES) -> dict[int, int]:
    try:
        text = Path(path).read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise HexFormatError(f"{path}: not an ASCII hex file ({exc.reason} at byte {exc.start})") from None
    return parse_image(text, str(path), word_bytes)


def to_bytes(words: dict[int, int], size: int, word_bytes: int = WORD_BYTES) -> np.ndarray:
    """Flatten an image into a zero-filled byte array of ``size`` bytes."""
    mem = np.zeros(size, dtype=np.uint8)
    for waddr, w in words.items():
        base = waddr * word_bytes
        if base + word_bytes > size:
            raise HexFormatError(f"word address {waddr:#x} lies beyond the {size}-byte memory")
        mem[base : base + word_bytes] = np.frombuffer(w.to_bytes(word_bytes, "little"), dtype=np.uint8)
    return mem
