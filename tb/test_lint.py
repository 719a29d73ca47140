"""The RTL is lint-clean under ``verilator --lint-only -Wall`` (waivers in lint/verilator_waiver.vlt) and
compiles under Icarus 11, for every named configuration; its port lists take their widths from parameters
(pqa_pkg, generated from the spec, or the module's own), never from literals; and pqa_top refuses a
configuration that breaks one of the spec's config_rules with a message naming the parameter and its value,
under both simulators, its checks bounded by the pqa_pkg::CfgRule* constants, never by literals."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from pqa_runner import ROOT, hdl_parameters, lint, sources, verilator_env

from pqcompile import gen
from pqcompile.spec import SpecError, check_config, load


@pytest.mark.rtl
@pytest.mark.parametrize("config", list(load().configs))
def test_verilator_lint_clean(config: str) -> None:
    r = lint(config)
    assert r.returncode == 0 and "%Warning" not in r.stderr, r.stderr


@pytest.mark.rtl
def test_waiver_hides_only_the_package_parameters_it_names(tmp_path: Path) -> None:
    """lint/verilator_waiver.vlt waives, by name, the pqa_pkg parameters that the RTL leaves unused by design
    (gen.rtl_unused); any other unused package parameter, and an unused parameter of a module, still warns."""
    waived = gen.rtl_unused(load())[0]
    pkg, mod = tmp_path / "pqa_pkg.sv", tmp_path / "pqa_t.sv"
    pkg.write_text(f"package pqa_pkg;\n  localparam int {waived} = 1;\n  localparam int ShapeNewW = 3;\nendpackage\n")
    mod.write_text("module pqa_t #(parameter int Spare = 1) (input logic a_i, output logic y_o);\n"
                   "  assign y_o = a_i;\nendmodule\n")
    verilator_env()
    r = subprocess.run(["verilator", "--lint-only", "-Wall", str(ROOT / "lint" / "verilator_waiver.vlt"),
                        str(pkg), str(mod), "--top-module", "pqa_t"], capture_output=True, text=True)
    warned = set(re.findall(r"Parameter is not used: '(\w+)'", r.stderr))
    assert warned == {"ShapeNewW", "Spare"}, r.stderr


def _icarus(params: dict[str, int], out: Path) -> subprocess.CompletedProcess[str]:
    args = [f"-Ppqa_top.{k}={v}" for k, v in params.items()]
    return subprocess.run(["iverilog", "-g2012", "-o", str(out), "-s", "pqa_top", *args, *map(str, sources())],
                          capture_output=True, text=True)


@pytest.mark.rtl
@pytest.mark.parametrize("config", list(load().configs))
def test_icarus_compiles(config: str, tmp_path: Path) -> None:
    r = _icarus(hdl_parameters(config), tmp_path / "a.vvp")
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower()


# ---------------------------------------------------------------------------------------------------------
# Port widths come from parameters
# ---------------------------------------------------------------------------------------------------------

GENERATED = {"pqa_pkg.sv"}  # generated from the spec, where the numbers live
# AXI4 protocol fields keep their standard widths (AMBA AXI4, ARM IHI 0022): the only literal port widths.
AXI_FIELD_WIDTHS = {"len": 8, "size": 3, "burst": 2, "cache": 4, "prot": 3, "resp": 2, "id": 1}
_AXI_PORT = re.compile(r"[ms]_axil?_(?:aw|ar|b|r)?(len|size|burst|cache|prot|resp|id)")
_LITERAL_RANGE = re.compile(r"\[(\s*[0-9(][0-9_\s+\-*/()]*):([0-9_\s+\-*/()]+)\]\s*(\w*)")
_MODULE = re.compile(r"\bmodule\s+\w+")


def _blank_comments(text: str) -> str:
    """``text`` with comments replaced by spaces (line numbers and offsets kept)."""
    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group())
    return re.sub(r"/\*.*?\*/|//[^\n]*", blank, text, flags=re.S)


def _header_end(text: str, start: int) -> int:
    """Offset of the ``;`` that ends the module header (``#(...)`` parameter list and ``(...)`` port list)
    beginning at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        elif text[i] == ";" and depth == 0:
            return i
    raise ValueError("module header without its closing ');'")


def _value(expr: str) -> int:
    """An integer expression of literals (+ - * /), as in a packed range."""
    ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__, ast.Div: int.__floordiv__}

    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError(f"not a literal range bound: {expr!r}")
    return ev(ast.parse(expr.replace("_", ""), mode="eval").body)


def literal_port_widths(text: str, name: str) -> list[str]:
    """``name:line: [msb:lsb] on 'port'`` for every packed range written with literals only in the module
    headers (parameter and port lists) of SystemVerilog source ``text``, except the AXI4 protocol fields
    at their standard widths (``m_axi_awlen [7:0]``, ``m_axi_awid [0:0]`` ...)."""
    src = _blank_comments(text)
    bad = []
    for mod in _MODULE.finditer(src):
        end = _header_end(src, mod.end())
        for m in _LITERAL_RANGE.finditer(src, mod.end(), end):
            port = m.group(3)
            axi = _AXI_PORT.fullmatch(port)
            if axi and _value(m.group(1)) - _value(m.group(2)) + 1 == AXI_FIELD_WIDTHS[axi.group(1)]:
                continue
            line = src.count("\n", 0, m.start()) + 1
            rng = f"[{m.group(1).strip()}:{m.group(2).strip()}]"
            bad.append(f"{name}:{line}: {rng} on '{port}'")
    return bad


def test_rtl_port_widths_come_from_parameters() -> None:
    """A literal width in a port list restates a number that the spec (pqa_pkg) or a module parameter owns;
    such a width drifts silently when the spec changes (`load_buf` was 3 bits where the ISA field is 4)."""
    bad = []
    for path in sorted((ROOT / "rtl").glob("*.sv")):
        if path.name not in GENERATED:
            bad += literal_port_widths(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not bad, ("literal widths in RTL port lists; use a pqa_pkg parameter (make gen adds one from the "
                     "spec) or a module parameter:\n" + "\n".join(bad))


def test_literal_port_width_check_finds_a_literal() -> None:
    src = """// a module [7:0] in a comment
module pqa_x #(
  parameter int W = 8,              // [3:0] in a comment
  parameter int D = $clog2(W / 2)
) (
  input  logic [pqa_pkg::ShapeKW-1:0] k_i,
  input  logic [15:0]                 d_i,
  output logic [0:0]                  m_axi_awid,
  output logic [7:0]                  m_axi_awlen,
  output logic [6:0]                  m_axi_arlen,  /* [5:0] */
  input  logic [1:0]                  s_axil_bresp,
  output logic [16-1:0]               m_o
);
  logic [15:0] body_q;  // declarations in the body are not checked
endmodule
module pqa_y (input logic [W-1:0] a_i, output logic [3:0] b_o);
endmodule
"""
    assert literal_port_widths(src, "x.sv") == [
        "x.sv:7: [15:0] on 'd_i'", "x.sv:10: [6:0] on 'm_axi_arlen'", "x.sv:12: [16-1:0] on 'm_o'",
        "x.sv:16: [3:0] on 'b_o'"]
    # the RTL as it is passes; the same file with one port width typed by hand does not
    top = (ROOT / "rtl" / "pqa_ctrl.sv").read_text(encoding="utf-8")
    assert literal_port_widths(top, "pqa_ctrl.sv") == []
    typed, n = re.subn(r"\[pqa_pkg::ShapeDW-1:0\](\s+d_o)", r"[15:0]\1", top)
    assert n == 1
    assert [b.split(":", 2)[2] for b in literal_port_widths(typed, "pqa_ctrl.sv")] == [" [15:0] on 'd_o'"]


# ---------------------------------------------------------------------------------------------------------
# An unsupported bus width is refused with a message
# ---------------------------------------------------------------------------------------------------------

BUS_REFUSAL = "pqa_top: AxiDataWidth=32 is not supported"


@pytest.mark.rtl
def test_verilator_refuses_an_unsupported_bus_width() -> None:
    r = lint(args=["-GAxiDataWidth=32"])
    assert r.returncode != 0
    first = next(line for line in r.stderr.splitlines() if line.startswith("%"))
    assert BUS_REFUSAL in first, r.stderr  # the first message, before any other complaint


@pytest.mark.rtl
def test_icarus_refuses_an_unsupported_bus_width(tmp_path: Path) -> None:
    """Icarus 11 has no elaboration-time $error: the design compiles and stops at time 0 with the message."""
    c = _icarus({"AxiDataWidth": 32}, tmp_path / "a.vvp")
    assert c.returncode == 0, c.stderr
    r = subprocess.run(["vvp", "-n", str(tmp_path / "a.vvp")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert BUS_REFUSAL in r.stdout + r.stderr, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------------------
# A configuration that breaks a rule of the spec is refused with a message, the same ones spec.py refuses
# ---------------------------------------------------------------------------------------------------------

def breaking_values(param: str, params: dict[str, int]) -> list[int]:
    """Values of ``param`` that break its rule (spec config_rules), next to the configuration ``params``:
    one past each bound, twice an `eq`, three times the least power of two."""
    r = load().config_rules[param]
    out = []
    if r.max is not None:
        out.append(r.max.resolve(params) + 1)
    if r.eq is not None:
        out.append(2 * r.eq.resolve(params))
    if r.pow2:
        out.append(3 * r.min.resolve(params) if r.min is not None else 3)
    if r.min is not None:
        out.append(r.min.resolve(params) - 1)
    return out


BROKEN = [(p, v) for p in load().config_rules for v in breaking_values(p, hdl_parameters("small"))]


def _refusal(param: str, value: int, text: str) -> list[str]:
    return [line for line in text.splitlines() if "pqa_top: " in line and f"{param}={value}" in line
            and "not supported" in line]


@pytest.mark.rtl
@pytest.mark.parametrize(("param", "value"), BROKEN, ids=[f"{p}={v}" for p, v in BROKEN])
def test_verilator_refuses_a_broken_rule(param: str, value: int) -> None:
    params = {**hdl_parameters("small"), param: value}
    with pytest.raises(SpecError, match=rf"{param} = {value} breaks config_rules\.{param}"):
        check_config("t", params, load().config_rules)  # spec.py refuses it too
    r = lint(args=[f"-G{k}={v}" for k, v in params.items()])
    assert r.returncode != 0 and _refusal(param, value, r.stderr), r.stderr


# Icarus compiles a sub-module before pqa_top's time-0 message: with AccW < LutW, pqa_lookup's sign extension
# has a negative width, a compile error (still a refusal, without the message).
ICARUS_COMPILE_ERROR = {"AccW"}


@pytest.mark.rtl
@pytest.mark.parametrize("param", list(load().config_rules))
def test_icarus_refuses_a_broken_rule(param: str, tmp_path: Path) -> None:
    values = breaking_values(param, hdl_parameters("small"))
    # a bus of whole bytes (1025 bits fails in Icarus's code generation, before the time-0 message)
    value = next((v for v in values if param != "AxiDataWidth" or v % 64 == 0), values[0])
    c = _icarus({**hdl_parameters("small"), param: value}, tmp_path / "a.vvp")
    if param in ICARUS_COMPILE_ERROR:
        assert c.returncode != 0
        return
    assert c.returncode == 0, c.stderr
    r = subprocess.run(["vvp", "-n", str(tmp_path / "a.vvp")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and _refusal(param, value, r.stdout + r.stderr), r.stdout + r.stderr


_CHECK = re.compile(r"\bif\s*\((.*?)\)\s*begin\s*:\s*(gen_\w+_check)", re.S)


def test_pqa_top_checks_use_the_package_rules() -> None:
    """pqa_top's configuration checks compare its parameters with the pqa_pkg::CfgRule* constants (or with
    each other), never with a literal; and every CfgRule constant of the package is checked there."""
    top = _blank_comments((ROOT / "rtl" / "pqa_top.sv").read_text(encoding="utf-8"))
    checks = _CHECK.findall(top)
    assert len(checks) >= 4
    for cond, name in checks:
        assert not re.search(r"(?<![\w'])\d+", cond), f"{name}: a literal bound in ({cond})"
    consts = set(re.findall(r"localparam (?:int|bit) (CfgRule\w+) =", gen.sv_package(load())))
    used = set(re.findall(r"pqa_pkg::(CfgRule\w+)", " ".join(c for c, _ in checks)))
    assert used == consts
