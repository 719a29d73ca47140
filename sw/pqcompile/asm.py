"""``pqasm``: assemble PQA programs written by hand into memory images, and disassemble images into listings.

``pqasm assemble PROG.asm -o IMAGE.hex [--base ADDR] [--data FILE.hex]... [--config NAME]``
``pqasm disassemble IMAGE.hex [--base ADDR] [--count N] [-o LISTING.asm] [--config NAME]``

Source syntax (docs/assembly.md): one statement a line, ``mnemonic field=value ...`` exactly as
``isa.disassemble`` prints it, or ``.word VALUE`` for a raw instruction word; ``#`` and ``//`` start comments.
A line may begin with the two columns of a listing (``program.asm``, ``pqasm disassemble``): the address
(``0x...``) and the instruction word (16 hex digits); when present they are checked against the address the
instruction gets and the word its text assembles to. ``pqasm disassemble`` prints exactly that listing format,
and its output assembles back to the same words (the round trip).

Exit status (``clitools``): 0 on success; 2 when the input or the command line is refused (one line
``pqasm: error: FILE:LINE: ...`` on stderr); 1 on an internal error (a bug: one line, ``PQA_TRACEBACK=1``
adds the traceback).
Outputs are written atomically (temporary file beside the target, then renamed) and replace only a file that
pqasm wrote itself (its first line is pqasm's header comment); anything else is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import hexfmt, isa
from .clitools import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, ArgumentParser, fail, printable
from .spec import HwConfig
from .spec import load as load_spec

# The first line of every file pqasm writes starts with its header (then a space or the end of the line): the
# mark that lets pqasm replace the file later. It refuses to replace anything else.
IMAGE_HEADER = "// pqasm image"
LISTING_HEADER = "# pqasm listing"  # a listing written with ``disassemble -o``
END = "end"  # the mnemonic that stops ``disassemble`` without --count
_HEXDIGITS = re.compile(r"[0-9a-fA-F]+$")


class UsageError(ValueError):
    """A refused input or option (exit status 2); the message names the file (and line) or the option."""


@dataclass
class Source:
    """An assembled program: the words and, for each, the line of the source that gave it."""

    name: str
    base: int
    words: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def show(text: object) -> str:
    """``text`` as one line of printable ASCII, for messages (file names are user text): every character outside
    0x20..0x7e backslash-escaped (``clitools.printable``). Idempotent, so a whole message can go through it
    again."""
    return printable(text, 1000)


def parse_int(text: str, option: str) -> int:
    """An option value: decimal or 0x hex, not negative."""
    try:
        val = isa.parse_number(text.strip(), option)
    except isa.AsmError as exc:
        raise UsageError(str(exc)) from None
    if val < 0:
        raise UsageError(f"{option}: {show(text)} is negative")
    return val


def _columns(tokens: list[str]) -> tuple[int | None, int | None, int]:
    """The listing columns at the start of ``tokens``: (address or None, word or None, tokens they take)."""
    digits = load_spec().insn_bits // 4
    addr = word = None
    i = 0
    if tokens and tokens[0][:2] in ("0x", "0X"):
        if not _HEXDIGITS.match(tokens[0][2:]):
            raise isa.AsmError(f"bad address column {show(repr(tokens[0]))} (write 0x and hex digits)")
        addr = int(tokens[0][2:], 16)
        i = 1
    if i < len(tokens):
        tok = tokens[i]
        if _HEXDIGITS.match(tok) and len(tok) == digits and tok not in {i.mnemonic for i in load_spec().instructions}:
            word = int(tok, 16)
            i += 1
        elif tok[0].isdigit():  # a mnemonic never starts with a digit
            if addr is None:
                raise isa.AsmError(f"{show(repr(tok))} is neither an address column (0x...) nor a word column "
                                   f"({digits} hex digits)")
            raise isa.AsmError(f"bad word column {show(repr(tok))} (expected {digits} hex digits)")
    return addr, word, i


def assemble_source(text: str, name: str = "<source>", base: int = 0) -> Source:
    """Assemble ``text`` (the syntax of docs/assembly.md, listing columns accepted) for an instruction stream
    at byte address ``base``. Raises :class:`isa.AsmError` whose message starts with ``NAME:LINE:``."""
    step = isa.insn_bytes()
    out = Source(name, base)
    for lineno, line in enumerate(text.split("\n"), 1):
        where = f"{show(name)}:{lineno}"
        try:
            body = isa.strip_comment(line)
            if not body:
                continue
            tokens = body.split()
            addr, word, used = _columns(tokens)
            stmt = body.split(None, used)[used] if used < len(tokens) else ""
            expected = base + step * len(out.words)
            if not stmt:
                raise isa.AsmError("a listing column without an instruction")
            if stmt.startswith("<illegal"):
                raw = f" .word {word:#0{2 * step + 2}x}" if word is not None else " .word VALUE"
                raise isa.AsmError(f"the listing marks an illegal instruction word here ({show(stmt)}); write it as"
                                   f"{raw} to place the raw word")
            if addr is not None and addr != expected:
                raise isa.AsmError(f"address column {addr:#x} is not this instruction's address {expected:#x} "
                                   f"(instruction {len(out.words)} of a stream at base {base:#x}; see --base)")
            got = isa.parse_statement(stmt)
            if word is not None and word != got:
                raise isa.AsmError(f"word column {word:0{2 * step}x} differs from {got:0{2 * step}x}, the word the "
                                   "text assembles to")
        except isa.AsmError as exc:
            raise isa.AsmError(f"{where}: {exc}") from None
        out.words.append(got)
        out.lines.append(lineno)
    return out


def _config(name: str) -> HwConfig:
    spec = load_spec()
    if name not in spec.configs:
        raise UsageError(f"--config: unknown hardware configuration {show(repr(name))}; known: "
                         f"{', '.join(spec.configs)}")
    return spec.config(name)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{show(path)}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{show(path)}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_image(path: Path, word_bytes: int) -> hexfmt.Image:
    try:
        return hexfmt.read_image(path, word_bytes)
    except OSError as exc:
        raise UsageError(f"{show(path)}: cannot read ({exc.strerror or exc})") from None


def image_text(src: Source, cfg: HwConfig, data: Sequence[hexfmt.Image] = ()) -> str:
    """The memory image (hex text, bus words of ``cfg``) holding the instruction stream of ``src`` at its base
    and the words of the ``data`` images; its first line is :data:`IMAGE_HEADER`. Raises UsageError naming
    FILE:LINE when a data word overlaps the instruction stream or another data word, or lies beyond the
    address space, and when the instruction stream leaves the address space."""
    bus = cfg.bus_bytes
    step = isa.insn_bytes()
    limit = 1 << cfg.AxiAddrWidth
    end = src.base + step * len(src.words)
    if end > limit:
        first = (limit - src.base + step - 1) // step
        where = f"{show(src.name)}:{src.lines[first]}" if first < len(src.lines) else show(src.name)
        raise UsageError(f"{where}: the instruction stream leaves the {cfg.AxiAddrWidth}-bit address space "
                         f"(base {src.base:#x}, {len(src.words)} instructions)")
    lo = src.base - src.base % bus  # the stream starts inside the bus word at lo: the bytes before it are zero
    stream = bytes(src.base - lo) + b"".join(w.to_bytes(step, "little") for w in src.words)
    stream_words = range(lo // bus, (lo + len(stream) + bus - 1) // bus) if src.words else range(0)
    segments: list[tuple[int, bytes, str]] = []
    if src.words:
        segments.append((lo, stream, f"instruction stream: {len(src.words)} instructions from {src.name}, "
                                     f"base {src.base:#x}"))
    owner: dict[int, hexfmt.Image] = {}
    for img in data:
        for waddr in img:
            where = show(img.where(waddr))
            if (waddr + 1) * bus > limit:
                raise UsageError(f"{where}: word address {waddr:#x} lies beyond the {cfg.AxiAddrWidth}-bit address "
                                 "space")
            if waddr in stream_words:
                raise UsageError(f"{where}: word address {waddr:#x} (byte address {waddr * bus:#x}) overlaps the "
                                 f"instruction stream (byte addresses {src.base:#x}..{end - 1:#x})")
            if waddr in owner:
                raise UsageError(f"{where}: word address {waddr:#x} is also written by "
                                 f"{show(owner[waddr].where(waddr))}")
            owner[waddr] = img
        run: list[int] = []
        for waddr in sorted(img):  # one segment per run of consecutive words
            if run and waddr != run[-1] + 1:
                segments.append(_data_segment(img, run, bus))
                run = []
            run.append(waddr)
        if run:
            segments.append(_data_segment(img, run, bus))
    return _header(IMAGE_HEADER, f"from {hexfmt.escape_comment(src.name)}") + hexfmt.format_image(segments, bus)


def _header(mark: str, what: str) -> str:
    return f"{mark} {what} (pqasm overwrites a file only when its first line starts '{mark}')\n"


def _data_segment(img: hexfmt.Image, run: list[int], bus: int) -> tuple[int, bytes, str]:
    raw = b"".join(img[a].to_bytes(bus, "little") for a in run)
    return run[0] * bus, raw, f"data from {img.where(run[0])}"


def read_stream(img: hexfmt.Image, bus: int, base: int, count: int | None, name: str) -> list[int]:
    """The instruction words of ``img`` from byte address ``base``: ``count`` of them, or (None) up to and
    including the first ``end``. Bytes the image does not write inside its extent read as zero (zero-filled
    memory, as the simulators load it); reading beyond the image's last word is a UsageError."""
    step = isa.insn_bytes()
    extent = (max(img) + 1) * bus if img else 0

    def byte(a: int) -> int:
        return (img.get(a // bus, 0) >> (8 * (a % bus))) & 0xFF

    words: list[int] = []
    addr = base
    end_op = load_spec().by_mnemonic(END).opcode
    opf = load_spec().opcode_field
    while count is None or len(words) < count:
        if addr + step > extent:
            if count is None:
                raise UsageError(f"{show(name)}: no '{END}' instruction from base {base:#x} to the end of the image "
                                 f"(byte address {extent:#x}); give --count")
            raise UsageError(f"{show(name)}: --count {count} from base {base:#x} reads beyond the image's last word "
                             f"(byte address {extent:#x})")
        word = int.from_bytes(bytes(byte(addr + i) for i in range(step)), "little")
        words.append(word)
        addr += step
        if count is None and (word >> opf.lsb) & opf.mask == end_op:
            try:
                isa.decode(word)
            except isa.IllegalInstruction:
                continue  # an end opcode with reserved bits set is illegal, not the end of the stream
            break
    return words


def write_output(path: Path, text: str, header: str) -> None:
    """Write ``text`` to ``path`` atomically; an existing ``path`` is replaced only when it is a regular file
    whose first line starts with ``header`` (a file pqasm wrote), else UsageError."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{show(path)}: exists and is not a regular file; pqasm does not replace it")
    if path.exists():
        try:
            with open(path, "rb") as fh:
                first = fh.readline(len(header) + 1)
        except OSError as exc:
            raise UsageError(f"{show(path)}: exists and cannot be read ({exc.strerror or exc})") from None
        mark = header.encode("ascii")
        if first.rstrip(b"\r\n") != mark and not first.startswith(mark + b" "):
            raise UsageError(f"{show(path)}: exists and was not written by pqasm (its first line is not "
                             f"'{header} ...'); pqasm does not replace it: remove it or choose another name")
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".pqasm-tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"{show(path)}: cannot write ({exc.strerror or exc})") from None
    done = False
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as fh:
            fh.write(text)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp made it 0600: give it the permissions of a new file
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        raise UsageError(f"{show(path)}: cannot write ({exc.strerror or exc})") from None
    finally:
        if not done:
            Path(tmp).unlink(missing_ok=True)


def cmd_assemble(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    base = parse_int(args.base, "--base")
    step = isa.insn_bytes()
    if base % step:
        raise UsageError(f"--base {base:#x} is not {step}-byte aligned (the instruction fetch needs it)")
    if base >= 1 << cfg.AxiAddrWidth:
        raise UsageError(f"--base {base:#x} lies beyond the {cfg.AxiAddrWidth}-bit address space")
    src_path = Path(args.program)
    text = _read_text(src_path)
    try:
        src = assemble_source(text, str(src_path), base)
    except isa.AsmError as exc:
        raise UsageError(str(exc)) from None
    data = [_read_image(Path(d), cfg.bus_bytes) for d in args.data]
    out = image_text(src, cfg, data)
    write_output(Path(args.output), out, IMAGE_HEADER)
    return EXIT_OK


def cmd_disassemble(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    base = parse_int(args.base, "--base")
    count = None if args.count is None else parse_int(args.count, "--count")
    step = isa.insn_bytes()
    if base % step:
        raise UsageError(f"--base {base:#x} is not {step}-byte aligned (the instruction fetch needs it)")
    img = _read_image(Path(args.image), cfg.bus_bytes)
    words = read_stream(img, cfg.bus_bytes, base, count, args.image)
    text = isa.listing(base, words)
    if args.output is None:
        sys.stdout.write(text)
    else:
        header = _header(LISTING_HEADER, f"of {hexfmt.escape_comment(args.image)}, base {base:#x}")
        write_output(Path(args.output), header + text, LISTING_HEADER)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(
        prog="pqasm", description="Assemble PQA programs into memory images, and disassemble images into listings "
                                  "that assemble back to the same words (docs/assembly.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assemble", help="assembly source (or a program.asm listing) -> memory image (hex)")
    a.add_argument("program", help="assembly source: one instruction a line (program.asm listings too)")
    a.add_argument("-o", "--output", required=True, help="memory image to write ($readmemh hex)")
    a.add_argument("--base", default="0", help="byte address of the first instruction (default 0; decimal or 0x)")
    a.add_argument("--data", action="append", default=[], metavar="FILE.hex",
                   help="a memory image whose words are added to the output (repeatable); they must not overlap "
                        "the instruction stream or each other")
    a.add_argument("--config", default="default", help="hardware configuration (bus width, address space)")
    a.set_defaults(func=cmd_assemble)
    d = sub.add_parser("disassemble", help="memory image -> listing (address, word, text)")
    d.add_argument("image", help="memory image ($readmemh hex)")
    d.add_argument("--base", default="0", help="byte address of the first instruction (default 0)")
    d.add_argument("--count", default=None, help=f"instructions to list (default: up to the first '{END}')")
    d.add_argument("-o", "--output", default=None, help="write the listing to this file instead of stdout")
    d.add_argument("--config", default="default", help="hardware configuration (bus width)")
    d.set_defaults(func=cmd_disassemble)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, hexfmt.HexFormatError) as exc:
        return fail("pqasm", exc, EXIT_BAD_INPUT)
    except Exception as exc:  # noqa: BLE001  (anything else is ours: one line, the traceback on request)
        print(f"pqasm: internal error: {show(exc)} (please report it; PQA_TRACEBACK=1 prints the traceback)",
              file=sys.stderr)
        if os.environ.get("PQA_TRACEBACK"):
            traceback.print_exc()
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
