"""Memory-image writer and validating reader."""

from __future__ import annotations

import numpy as np
import pytest

from pqcompile import hexfmt


def test_round_trip(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, 37, dtype=np.uint8)
    b = rng.integers(0, 256, 8, dtype=np.uint8)
    p = tmp_path / "m.hex"
    hexfmt.write_image(p, [(0x40, a, "a"), (0x0, b, "b")])
    mem = hexfmt.to_bytes(hexfmt.read_image(p), 128)
    assert (mem[0x40 : 0x40 + 37] == a).all() and (mem[:8] == b).all()
    assert (mem[0x40 + 37 : 0x68] == 0).all()  # padding of the last word


def test_little_endian_words() -> None:
    text = hexfmt.format_image([(8, bytes([1, 2, 3, 4, 5, 6, 7, 8]), "x")])
    assert "@00000001" in text and "0807060504030201" in text


@pytest.mark.parametrize(("text", "msg"), [
    ("@0\n00000000000000zz\n", r"<image>:2: '00000000000000zz' is not a hex word"),
    ("// c\n@0\n0011\n", r"<image>:3: word '0011' has 4 digits, expected 16"),
    ("@0\n0000000000000000\n@0\n0000000000000001\n", r"<image>:4: word address 0x0 written twice"),
    ("@xyz\n", r"<image>:1: bad address record"),
])
def test_errors_name_the_line(text: str, msg: str) -> None:
    with pytest.raises(hexfmt.HexFormatError, match=msg):
        hexfmt.parse_image(text)


def test_line_numbers_count_only_line_ends() -> None:
    text = "// a\x0c form feed and a \x1c separator are not line ends\r\n@0\r0000000000000001\n\x0c00000000000000zz\n"
    with pytest.raises(hexfmt.HexFormatError, match=r"^<image>:4: '00000000000000zz' is not a hex word$"):
        hexfmt.parse_image(text)


def test_binary_and_out_of_range(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "bad.hex"
    p.write_bytes(b"@0\n\xff\xfe\n")
    with pytest.raises(hexfmt.HexFormatError, match=r"bad\.hex:2: not an ASCII hex file"):
        hexfmt.read_image(p)
    with pytest.raises(hexfmt.HexFormatError, match=r"^word address 0x4 \(byte address 0x20\) lies beyond the "
                                                    r"32-byte memory$"):
        hexfmt.to_bytes({4: 1}, 32)  # a plain dict: no file to name


def test_beyond_memory_names_file_and_line(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "m.hex"
    p.write_text("// two words, then one far away\n@0\n0000000000000001\n0000000000000002\n\n@10\n"
                 "0000000000000003\n")
    words = hexfmt.read_image(p)
    assert words == {0: 1, 1: 2, 0x10: 3} and words.lines == {0: 3, 1: 4, 0x10: 7}
    assert hexfmt.to_bytes(words, 0x88)[0x80] == 3
    with pytest.raises(hexfmt.HexFormatError) as exc:
        hexfmt.to_bytes(words, 0x80)
    assert str(exc.value) == f"{p}:7: word address 0x10 (byte address 0x80) lies beyond the 128-byte memory"
    with pytest.raises(hexfmt.HexFormatError, match=r"^<image>:3: word address 0x1 "):
        hexfmt.to_bytes(hexfmt.parse_image("\n@1\n0000000000000002\n"), 8)


@pytest.mark.parametrize(("text", "escaped"), [
    ("plain text: a-z 0-9 ~!", "plain text: a-z 0-9 ~!"),
    ("x\n@00000010\nffffffffffffffff", "x\\n@00000010\\nffffffffffffffff"),
    ("cr\rtab\tbell\x07 del\x7f", "cr\\rtab\\tbell\\x07 del\\x7f"),
    ("r\u00e9seau \u2713 \u2028 \U0001f600", "r\\xe9seau \\u2713 \\u2028 \\U0001f600"),
    ("back\\slash \\xe9", "back\\slash \\xe9"),  # printable: passes (escaped text stays as it is)
])
def test_escape_comment(text: str, escaped: str) -> None:
    assert hexfmt.escape_comment(text) == escaped


SEG = [(0, np.arange(16, dtype=np.uint8), "data")]


@pytest.mark.parametrize("title", ["x\n@00000010\nffffffffffffffff", "x\r@00000010\rffffffffffffffff",
                                   "x\u2028@00000010\x85ffffffffffffffff"])
def test_title_cannot_inject_data_lines(tmp_path, title: str) -> None:  # noqa: ANN001
    hexfmt.write_image(tmp_path / "a.hex", SEG, 8)
    hexfmt.write_image(tmp_path / "b.hex", SEG, 8, title=title)
    a, b = (tmp_path / "a.hex").read_bytes(), (tmp_path / "b.hex").read_bytes()
    assert b.isascii() and b.count(b"\n") == a.count(b"\n") + 1 and b"\r" not in b
    assert hexfmt.read_image(tmp_path / "b.hex") == hexfmt.read_image(tmp_path / "a.hex") == {
        0: 0x0706050403020100, 1: 0x0F0E0D0C0B0A0908}


def test_non_ascii_title_and_comments_write_and_read_back(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "m.hex"
    hexfmt.write_image(p, [(0, np.arange(8, dtype=np.uint8), "tensor \u00e9\n@0\n0000000000000000")], 8,
                       title="r\u00e9seau \u2713")
    lines = p.read_bytes().decode("ascii").splitlines()
    assert lines[1] == "// r\\xe9seau \\u2713"
    assert lines[2] == "// tensor \\xe9\\n@0\\n0000000000000000: 8 bytes at byte address 0x0"
    assert hexfmt.read_image(p) == {0: 0x0706050403020100}


def test_misaligned_segment_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        hexfmt.format_image([(3, b"x", "x")])
