"""Long runs that survive (pqtrain.run): checkpoints after every epoch, --resume continuing bit for bit, the
per-epoch CSV log, the device option and the one-line refusals (fast: tiny models on digits / random images)."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from pqmodel.data import load_digits_split
from pqmodel.model import load
from pqtrain import cli
from pqtrain.run import CHECKPOINT, CSV_FIELDS, Checkpoints, Run, RunError, Stopped, resolve_device
from pqtrain.train import TrainConfig, mlp_arch, train_pipeline

TINY = TrainConfig(float_epochs=3, pq_epochs=3, qat_bits=4, qat_epochs=2, kmeans_iters=3, n_calib=64,
                   method="lutnn")  # lutnn: trained parameters outside the model (its temperatures) are resumed too


def _digits() -> tuple[torch.Tensor, ...]:
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=0)
    return x_tr[:300], y_tr[:300], x_te[:90], y_te[:90]


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _pipeline(arch: dict[str, Any], data: tuple[torch.Tensor, ...], cfg: TrainConfig, ckdir: Path | None,
              resume: bool = False, stop_after: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    ck = Checkpoints(ckdir, resume=resume) if ckdir is not None else None
    return train_pipeline(arch, data, cfg, log=None, run=Run(checkpoints=ck, stop_after=stop_after))


@functools.cache
def _uninterrupted() -> tuple[torch.nn.Module, dict[str, Any]]:
    return _pipeline(mlp_arch([16], k=8, v=4), _digits(), TINY, None)


@pytest.mark.parametrize("stop", [2, 3, 5, 7])  # inside the float stage, at its end, inside fine-tuning, inside QAT
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path: Path, stop: int) -> None:
    arch, data = mlp_arch([16], k=8, v=4), _digits()
    ref, ref_meta = _uninterrupted()
    with pytest.raises(Stopped) as info:
        _pipeline(arch, data, TINY, tmp_path, stop_after=stop)
    assert info.value.epochs == stop and (tmp_path / CHECKPOINT).is_file()
    got, meta = _pipeline(arch, data, TINY, tmp_path, resume=True)
    assert _states_equal(ref, got)
    assert meta == ref_meta
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [(r["stage"], int(r["epoch"])) for r in rows] == [
        *(("float", e) for e in (1, 2, 3)), *(("pq-lutnn", e) for e in (1, 2, 3)), *(("qat-4b", e) for e in (1, 2))]


def test_resume_with_augmentation_and_sampler(tmp_path: Path) -> None:
    """The DataLoader path (DistributedSampler of one process, pad-4 crop + flip) resumes bit for bit too."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, 3, 8, 8, generator=gen), torch.randint(0, 3, (48,), generator=gen)
    arch = {"name": "tiny_cnn", "input_shape": [3, 8, 8], "num_classes": 3, "layers": [
        {"type": "pq_conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1,
         "k": 4, "v": 9, "metric": "l2"}, {"type": "relu"}, {"type": "flatten"},
        {"type": "pq_linear", "in_features": 64, "out_features": 3, "k": 4, "v": 4, "metric": "l2"}]}
    cfg = TrainConfig(float_epochs=2, pq_epochs=2, kmeans_iters=2, batch_size=16, augment=True, optimizer="sgd",
                      float_lr=0.05, schedule="step", val_fraction=0.25)
    data = (x[:36], y[:36], x[36:], y[36:])
    ref, _ = _pipeline(arch, data, cfg, None)
    with pytest.raises(Stopped):
        _pipeline(arch, data, cfg, tmp_path, stop_after=3)
    got, _ = _pipeline(arch, data, cfg, tmp_path, resume=True)
    assert _states_equal(ref, got)
    unaugmented, _ = _pipeline(arch, data, TrainConfig(**{**cfg.__dict__, "augment": False}), None)
    assert not _states_equal(ref, unaugmented)


def test_checkpoint_is_plain_data_written_atomically(tmp_path: Path) -> None:
    with pytest.raises(Stopped):
        _pipeline(mlp_arch([16], k=8, v=4), _digits(), TINY, tmp_path, stop_after=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, "log.csv"]  # no temporary file left
    obj = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert (obj["stage"], obj["epoch"]) == ("pq", 1)
    loop = obj["loop"]
    assert {"model", "optimizer", "scheduler", "batches", "rng", "best", "extra"} <= loop.keys()
    assert set(loop["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert isinstance(loop["batches"]["generator"], torch.Tensor)
    assert "float_state" in obj["pipeline"] and obj["identity"]["config"]["method"] == "lutnn"
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 4
    assert float(rows[0]["lr"]) == pytest.approx(TINY.float_lr) and float(rows[0]["seconds"]) >= 0


def _train(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "-o", str(tmp_path / "m.pt"), "--hidden", "16", "--k", "8", "--float-epochs", "2",
            "--pq-epochs", "1", *extra]


def test_cli_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "ck"

    def refused(argv: list[str], *words: str) -> None:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("pqtrain: error: ") and all(w in err for w in words), err

    refused(_train(tmp_path, "--resume"), "--resume needs --checkpoint-dir")
    refused(_train(tmp_path, "--checkpoint-dir", str(tmp_path / "m.pt" / "x"), "--resume"), "does not exist")
    assert cli.main(_train(tmp_path, "--checkpoint-dir", str(ck), "--stop-after", "1")) == 0
    assert "stopped after 1 epoch" in capsys.readouterr().out and not (tmp_path / "m.pt").exists()
    refused(_train(tmp_path, "--checkpoint-dir", str(ck)), "exists: pass --resume")
    refused(_train(tmp_path, "--checkpoint-dir", str(ck), "--resume", "--pq-lr", "0.5"), "other settings",
            "config.pq_lr")
    (ck / CHECKPOINT).write_bytes(b"PK\x03\x04 not really")
    refused(_train(tmp_path, "--checkpoint-dir", str(ck), "--resume"), "not a readable checkpoint")
    torch.save({"format": "pqtrain-checkpoint", "version": 1, "evil": os.getcwd}, ck / CHECKPOINT)
    refused(_train(tmp_path, "--checkpoint-dir", str(ck), "--resume"), "refused")
    refused(_train(tmp_path, "--model", "resnet20", "--data", "cifar10"), "--data cifar10 needs --data-dir")
    refused(_train(tmp_path, "--data", "cifar10", "--data-dir", str(tmp_path), "--no-augment"),
            "cannot be fed CIFAR-10")
    refused(_train(tmp_path, "--data-dir", str(tmp_path)), "--data-dir")
    refused(_train(tmp_path, "--log-csv", str(tmp_path / "nowhere" / "log.csv")), "does not exist")
    if not torch.cuda.is_available():
        refused(_train(tmp_path, "--device", "cuda"), "--device cuda: no CUDA device")
    assert not (tmp_path / "m.pt").exists()


def test_cli_resume_and_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run stopped and resumed through the CLI writes the model an uninterrupted one writes; on this CPU-only
    machine --device auto is the CPU and gives the same model as --device cpu."""
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    ck = tmp_path / "ck"
    args = ["--hidden", "16", "--k", "8", "--float-epochs", "2", "--pq-epochs", "2", "--checkpoint-dir", str(ck)]
    assert cli.main(["train", "-o", str(tmp_path / "a.pt"), *args, "--stop-after", "3", "--device", "cpu"]) == 0
    assert cli.main(["train", "-o", str(tmp_path / "a.pt"), *args, "--resume", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[pq-ste] resumed after epoch 1/2" in out and "\r" not in out
    assert cli.main(["train", "-o", str(tmp_path / "b.pt"), *args[:-2], "--device", "auto"]) == 0
    a, _, meta = load(tmp_path / "a.pt")
    b, _, _ = load(tmp_path / "b.pt")
    assert _states_equal(a, b) and meta["device"] == "cpu" and meta["processes"] == 1
    assert len(list(csv.DictReader((ck / "log.csv").open()))) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_is_the_same_from_a_cuda_model() -> None:
    from pqtrain.integer import export_integer

    data = _digits()
    model, _ = train_pipeline(mlp_arch([16], k=8, v=4), data, TrainConfig(float_epochs=2, pq_epochs=2), log=None,
                              run=Run(device=resolve_device("cuda")))
    arch = mlp_arch([16], k=8, v=4)
    on_gpu = export_integer(model, arch, data[0][:64], 8)(data[2])
    on_cpu = export_integer(model.cpu(), arch, data[0][:64], 8)(data[2])
    assert torch.equal(on_gpu, on_cpu)


def test_cuda_refused_without_a_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RunError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
