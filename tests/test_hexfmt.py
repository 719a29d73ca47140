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


def test_binary_and_out_of_range(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "bad.hex"
    p.write_bytes(b"@0\n\xff\xfe\n")
    with pytest.raises(hexfmt.HexFormatError, match="not an ASCII hex file"):
        hexfmt.read_image(p)
    with pytest.raises(hexfmt.HexFormatError, match="beyond"):
        hexfmt.to_bytes({4: 1}, 32)


def test_misaligned_segment_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        hexfmt.format_image([(3, b"x", "x")])
