"""pqcompile.progress: a live bar only on a terminal outside CI, a few plain lines (no carriage return)
otherwise, nothing when quiet; and the commands that use it."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
import torch

from pqcompile import progress
from pqcompile.progress import Phases, Progress, mode, timed

ROOT = Path(__file__).resolve().parents[1]


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interactive session: no CI, no PQA_PROGRESS, a real TERM."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PQA_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")


@pytest.fixture
def ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("PQA_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")


@pytest.mark.parametrize(("env", "tty", "quiet", "want"), [
    ({}, True, False, "bar"),
    ({"CI": "true"}, True, False, "lines"),
    ({"CI": "1"}, True, False, "lines"),
    ({"CI": "false"}, True, False, "bar"),
    ({"CI": ""}, True, False, "bar"),
    ({"PQA_PROGRESS": "0"}, True, False, "lines"),
    ({"PQA_PROGRESS": "off"}, True, False, "lines"),
    ({"TERM": "dumb"}, True, False, "lines"),
    ({}, False, False, "lines"),
    ({}, True, True, "off"),
    ({"CI": "true"}, False, True, "off"),
])
def test_mode(env: dict[str, str], tty: bool, quiet: bool, want: str) -> None:
    stream = Tty() if tty else io.StringIO()
    assert mode(stream, quiet, env=env) == want


def test_mode_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PQA_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("CI", "true")
    assert mode(Tty()) == "lines"
    monkeypatch.delenv("CI")
    assert mode(Tty()) == "bar"
    monkeypatch.setenv("PQA_PROGRESS", "0")
    assert mode(Tty()) == "lines"


def _jobs(stream: io.StringIO, total: int = 8, step: int = 2, **kw: object) -> None:
    with Progress("  regression", total, unit="jobs", stream=stream, **kw) as p:  # type: ignore[arg-type]
        for i in range(0, total, step):
            p.update(step, f"{i // 4} failing")
        p.write("a line of the caller's")


def test_bar_on_a_terminal(terminal: None) -> None:
    out = Tty()
    _jobs(out)
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    final = text.rstrip("\n").split("\r")[-1].rstrip(" ")  # tqdm pads a frame shorter than the last one
    # the rate reads "jobs/s", or "s/jobs" below one job a second (a loaded machine)
    assert re.search(r"^  regression: 100%\|#+\| 8/8 \[\d\d:\d\d<\d\d:\d\d, .*(jobs/s|s/jobs), 1 failing\]$",
                     final), final
    assert "\ra line of the caller's\n" in text  # the bar was cleared first, then redrawn below
    assert "ETA" not in text  # the plain lines' format is not used


@pytest.mark.parametrize("where", ["ci_on_a_terminal", "not_a_terminal", "pqa_progress_0"])
def test_plain_lines_in_a_log_or_ci(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("PQA_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    if where == "ci_on_a_terminal":
        monkeypatch.setenv("CI", "true")
    elif where == "pqa_progress_0":
        monkeypatch.setenv("PQA_PROGRESS", "0")
    out = Tty() if where != "not_a_terminal" else io.StringIO()
    _jobs(out)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    pat = [r"  regression: 2/8 jobs \(25%\), 0 failing, \d+s, ETA \d+s",
           r"  regression: 4/8 jobs \(50%\), 0 failing, \d+s, ETA \d+s",
           r"  regression: 6/8 jobs \(75%\), 1 failing, \d+s, ETA \d+s",
           r"a line of the caller's",
           r"  regression: 8/8 jobs, 1 failing, done in \d+s"]
    assert len(lines) == len(pat), text
    for line, p in zip(lines, pat, strict=True):
        assert re.fullmatch(p, line), (line, p)


def test_plain_lines_only_at_each_step_passed(ci: None) -> None:
    out = io.StringIO()
    _jobs(out, total=200, step=100)  # the first update passes 25% and 50%: one line, then the end
    assert [re.sub(r"\d+s", "Ns", x) for x in out.getvalue().splitlines()] == [
        "  regression: 100/200 jobs (50%), 0 failing, Ns, ETA Ns", "a line of the caller's",
        "  regression: 200/200 jobs, 25 failing, done in Ns"]
    out = io.StringIO()
    _jobs(out, total=3, step=1, every=0)  # every update
    assert [re.sub(r"\d+s", "Ns", x) for x in out.getvalue().splitlines()] == [
        "  regression: 1/3 jobs (33%), 0 failing, Ns, ETA Ns", "  regression: 2/3 jobs (67%), 0 failing, Ns, ETA Ns",
        "a line of the caller's", "  regression: 3/3 jobs, 0 failing, done in Ns"]


def test_quiet_prints_only_the_callers_lines(terminal: None) -> None:
    out = Tty()
    _jobs(out, quiet=True)
    assert out.getvalue() == "a line of the caller's\n"
    out = Tty()
    with Progress("x", 4, stream=out, lines=False) as p:  # lines=False: nothing of its own in a log
        p.update(4)
    assert "\r" in out.getvalue()  # but a bar on a terminal
    out = io.StringIO()
    with Progress("x", 4, stream=out, lines=False) as p:
        p.update(4)
    assert out.getvalue() == ""


def test_stopped_by_an_exception(ci: None) -> None:
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), Progress("runs", 10, unit="runs", stream=out) as p:
        p.update(1)
        raise KeyboardInterrupt
    assert re.fullmatch(r"runs: 1/10 runs, stopped after \d+s\n", out.getvalue()), out.getvalue()


def test_timed_lines(ci: None) -> None:
    out = Tty()
    with timed("  simulation", 100.0, detail="1491940 cycles estimated", stream=out):
        pass
    assert re.fullmatch(r"  simulation: about 1m40s expected \(1491940 cycles estimated\)\n"
                        r"  simulation: done in \d\.\ds\n", out.getvalue()), out.getvalue()
    out = io.StringIO()
    with pytest.raises(RuntimeError), timed("  simulation", None, stream=out):
        raise RuntimeError
    assert re.fullmatch(r"  simulation: started\n  simulation: stopped after \d\.\ds\n", out.getvalue())


def test_timed_bar_on_a_terminal(terminal: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "TICK_S", 0.05)
    out = Tty()
    with timed("  simulation", 0.1, detail="20 cycles", stream=out):
        time.sleep(0.4)
    text = out.getvalue()
    frames = text.split("\r")
    assert any(f.startswith("  simulation: 100%|") and f.endswith("longer than estimated") for f in frames), frames
    assert "expected" not in text and frames[-1] == ""  # cleared at the end, no plain lines


def test_phases(terminal: None) -> None:
    out = Tty()
    with Phases("pqcompile", ["load", "quantize"], stream=out) as ph:
        with ph.phase("load"):
            ph.write("pqcompile: header")
        with ph.phase("quantize"):
            pass
    text = out.getvalue()
    assert "\rpqcompile [quantize] 1/2 |" in text and "\rpqcompile: header\n" in text
    assert re.fullmatch(r"load \d\.\ds, quantize \d\.\ds", ph.summary())
    out = Tty()
    with Phases("pqcompile", ["load"], stream=out, quiet=True) as ph, ph.phase("load"):
        pass
    assert out.getvalue() == ""


def test_phases_in_ci_print_only_the_callers_lines(ci: None) -> None:
    out = Tty()
    with Phases("pqcompile", ["load", "write"], stream=out) as ph:
        with ph.phase("load"):
            ph.write("pqcompile: header")
        with ph.phase("write"):
            pass
    assert out.getvalue() == "pqcompile: header\n"


def test_pqcompile_in_ci_prints_plain_lines(ci: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pqcompile import cli

    assert cli.main([str(ROOT / "models" / "digits_mlp.pt"), "-o", str(tmp_path / "b"), "--config", "small",
                     "--count", "5"]) == 0
    cap = capsys.readouterr()
    assert "\r" not in cap.out and cap.err == ""
    last = cap.out.splitlines()[-1]
    assert re.fullmatch(r"  wrote .* in \d+\.\d s \(load \d\.\ds, quantize \d\.\ds, emit \d\.\ds, simulate \d\.\ds, "
                        r"check \d\.\ds, write \d\.\ds\)", last), last


def test_training_epochs_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from pqtrain.train import fit

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PQA_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=gen), torch.randint(0, 2, (32,), generator=gen)
    for stream, bar in ((Tty(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stdout", stream)
        model = torch.nn.Linear(4, 2)
        fit(model, list(model.parameters()), (x, y, x, y), epochs=4, lr=1e-2, log=print, log_every=2)
        text = stream.getvalue()
        logged = [line for line in text.replace("\r", "\n").splitlines() if line.startswith("[train] epoch")]
        assert [line.split(" loss")[0] for line in logged] == ["[train] epoch   2/4", "[train] epoch   4/4"], text
        assert ("\r" in text) is bar and ("/4 [00:00<" in text) is bar, text
