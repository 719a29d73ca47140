"""Block bench of ``pqa_dma`` (AXI4 master) on cocotbext-axi's AxiRam: reads and writes of 1..BufWords
beats from addresses next to 4 KiB boundaries, split into INCR bursts of at most 256 beats that never
cross 4 KiB (the burst list is compared with the rule), byte strobes on the last beat, data compared
with the memory (and the bytes around a write untouched), with and without random latency on AR/AW and
random backpressure on all five channels; SLVERR injected on a read and on a write beat: the command
ends with err_o, at most MAX_BURSTS - 1 bursts were issued after the failing one (those already in flight
when its response came), the bursts up to the failing one complete (the bytes the slave accepted are
written), and the next command runs cleanly. Parametrized over AxiAddrWidth."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import cocotb
import pytest
from block_util import SIMS, check_block, start_clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiRam
from pqa_gen import bursts
from pqa_runner import TB, block_sources

MEM = 1 << 16
BUF_WORDS = 1024  # tb_dma's BufWords
MAX_BURSTS = 4  # pqa_dma's MaxBursts: bursts in flight per engine


class Bench:
    def __init__(self, dut: object, rng: random.Random) -> None:
        self.dut, self.rng = dut, rng
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk_i, dut.rst_ni, reset_active_level=False, size=MEM)
        self.log: list[tuple[str, int, int]] = []
        self.poison: set[int] = set()
        self.latency = 0
        for kind, ch in (("r", self.ram.read_if.ar_channel), ("w", self.ram.write_if.aw_channel)):
            self._wrap_recv(kind, ch)
        rd, wr = self.ram.read_if._read, self.ram.write_if._write

        async def bad_read(address: int, length: int) -> bytes:
            if address // 8 in self.poison:
                raise OSError(f"injected SLVERR at {address:#x}")
            return await rd(address, length)

        async def bad_write(address: int, data: bytes) -> None:
            if address // 8 in self.poison:
                raise OSError(f"injected SLVERR at {address:#x}")
            await wr(address, data)

        self.ram.read_if._read = bad_read
        self.ram.write_if._write = bad_write

    def _wrap_recv(self, kind: str, ch: object) -> None:
        orig = ch.recv

        async def recv() -> object:
            t = await orig()
            addr = int(t.araddr if kind == "r" else t.awaddr)
            self.log.append((kind, addr, int(t.arlen if kind == "r" else t.awlen) + 1))
            if self.latency:
                await ClockCycles(self.dut.clk_i, self.rng.randint(0, self.latency))
            return t

        ch.recv = recv

    def backpressure(self, on: bool) -> None:
        chans = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                 self.ram.read_if.ar_channel, self.ram.read_if.r_channel]
        self.latency = 6 if on else 0
        for ch in chans:
            if on:
                p = self.rng.choice([0.2, 0.5, 0.8])
                ch.set_pause_generator(self._pauses(p))
            else:
                ch.clear_pause_generator()
                ch.pause = False  # clear_pause_generator leaves the last value set

    def _pauses(self, p: float) -> Iterator[bool]:
        r = random.Random(self.rng.random())
        return (r.random() < p for _ in itertools.count())

    async def command(self, write: bool, addr: int, beats: int, last_strb: int = 0xFF) -> bool:
        d = self.dut
        await FallingEdge(d.clk_i)
        d.host_sel_i.value = 0
        d.cmd_valid_i.value, d.cmd_write_i.value, d.cmd_addr_i.value = 1, int(write), addr
        d.cmd_beats_i.value, d.cmd_last_strb_i.value = beats, last_strb
        await RisingEdge(d.clk_i)
        d.cmd_valid_i.value = 0
        t = await First(RisingEdge(d.done_o), Timer(200 * (beats + 50), unit="ns"))
        assert not isinstance(t, Timer), f"DMA command {write=} {addr=:#x} {beats=} did not finish"
        await FallingEdge(d.clk_i)
        return bool(d.err_o.value)

    async def host_write(self, data: bytes) -> None:
        d = self.dut
        await FallingEdge(d.clk_i)
        d.host_we_i.value = 1
        for w in range(len(data) // 8):
            d.host_addr_i.value = w
            d.host_wdata_i.value = int.from_bytes(data[8 * w : 8 * w + 8], "little")
            await RisingEdge(d.clk_i)
        d.host_we_i.value = 0

    async def host_read(self, words: int) -> bytes:
        d = self.dut
        d.host_sel_i.value = 1
        out = b""
        for w in range(words):
            d.host_addr_i.value = w
            await RisingEdge(d.clk_i)
            await FallingEdge(d.clk_i)
            out += int(d.host_rdata_o.value).to_bytes(8, "little")
        d.host_sel_i.value = 0
        return out


def rand_addr(rng: random.Random, beats: int) -> int:
    """Aligned, often just below a 4 KiB boundary, inside the memory."""
    hi = MEM - 8 * beats - 8
    a = rng.choice([rng.randrange(0, hi), (rng.randrange(1, hi // 4096 + 1) * 4096 - 8 * rng.randint(1, 40))])
    return max(0, min(a, hi)) // 8 * 8


async def setup(dut: object) -> Bench:
    for s in ("cmd_valid_i", "cmd_write_i", "host_we_i", "host_sel_i"):
        getattr(dut, s).value = 0
    dut.rst_ni.value = 0
    rng = random.Random(cocotb.RANDOM_SEED)
    bench = Bench(dut, rng)
    await start_clock(dut)
    bench.ram.write(0, rng.randbytes(MEM))
    return bench


@cocotb.test()
async def dma_reads_and_writes(dut: object) -> None:
    b = await setup(dut)
    rng = b.rng
    for rnd in range(2):
        b.backpressure(rnd == 1)
        for i in range(10):
            beats = rng.choice([1, 2, 255, 256, 257, 513, rng.randint(1, BUF_WORDS)])
            addr = rand_addr(rng, beats)
            b.log.clear()
            if i % 2 == 0:
                assert not await b.command(False, addr, beats), "read failed"
                assert int(dut.rd_beats_o.value) == beats
                got = await b.host_read(beats)
                assert got == b.ram.read(addr, 8 * beats), f"read {addr=:#x} {beats=}: data differ"
                assert b.log == [("r", a, n) for a, n in bursts(addr, beats)], f"read bursts {b.log}"
            else:
                data = rng.randbytes(8 * beats)
                nlast = rng.randint(1, 8)
                strb = (1 << nlast) - 1
                await b.host_write(data)
                before = b.ram.read(addr - 64 if addr >= 64 else 0, 8 * beats + 128)
                assert not await b.command(True, addr, beats, strb), "write failed"
                exp = bytearray(before)
                off = addr - (addr - 64 if addr >= 64 else 0)
                exp[off : off + 8 * (beats - 1) + nlast] = data[: 8 * (beats - 1) + nlast]
                got = b.ram.read(addr - 64 if addr >= 64 else 0, 8 * beats + 128)
                assert got == bytes(exp), f"write {addr=:#x} {beats=} strobes={strb:#x}: memory differs"
                assert b.log == [("w", a, n) for a, n in bursts(addr, beats)], f"write bursts {b.log}"


@cocotb.test()
async def dma_error_responses(dut: object) -> None:
    b = await setup(dut)
    rng = b.rng
    for rnd in range(2):
        b.backpressure(rnd == 1)
        for write in (False, True):
            beats = rng.randint(300, BUF_WORDS)
            addr = rand_addr(rng, beats)
            split = bursts(addr, beats)
            fail = rng.randrange(len(split))  # the burst that gets the error
            fa, fn = split[fail]
            bad = fa // 8 + rng.randrange(fn)
            b.poison = {bad}
            b.log.clear()
            kind = "w" if write else "r"
            if write:
                data = rng.randbytes(8 * beats)
                await b.host_write(data)
                before = b.ram.read(addr, 8 * beats)
            assert await b.command(write, addr, beats), f"{kind}: SLVERR not reported"
            issued = [(kind, a, n) for a, n in split]
            assert fail + 1 <= len(b.log) <= fail + MAX_BURSTS and b.log == issued[: len(b.log)], \
                f"bursts around the error (the failing one is {fail}): {b.log}"
            if write:
                # every beat of the bursts up to the failing one is written, except the refused one; the
                # bursts issued after it (in flight when the error came back) are written whole
                end = 8 * sum(n for _, _, n in b.log)
                exp = bytearray(before)
                exp[:end] = data[:end]
                exp[bad * 8 - addr : bad * 8 - addr + 8] = before[bad * 8 - addr : bad * 8 - addr + 8]
                assert b.ram.read(addr, 8 * beats) == bytes(exp), "write: memory after SLVERR differs"
            b.poison = set()
            # the next command runs cleanly: nothing was left outstanding
            b.log.clear()
            assert not await b.command(False, addr, 3)
            assert await b.host_read(3) == b.ram.read(addr, 24)


PARAMS = [pytest.param({"AxiAddrWidth": 32, "BufWords": BUF_WORDS}, marks=pytest.mark.slow),
          {"AxiAddrWidth": 17, "BufWords": BUF_WORDS}]


@pytest.mark.rtl
@pytest.mark.parametrize("sim_name", SIMS)
@pytest.mark.parametrize("parameters", PARAMS, ids=lambda p: f"aw{p['AxiAddrWidth']}")
def test_dma(sim_name: str, parameters: dict[str, int]) -> None:
    srcs = block_sources("pqa_ram", "pqa_dma", extra=[TB / "dma" / "tb_dma.sv"])
    check_block(sim_name, "tb_dma", __file__, srcs, parameters)


