"""Time the training steps of a zoo model on random data of its input shape, and extrapolate an epoch:
``python -m pqtrain.timing --model resnet20 --device cpu --batch-size 128 --batches 3``.

For each stage (float training with SGD; PQ fine-tuning, ``ste`` with distillation from the float model, with
the element-wise and with the matrix-product distances; QAT at 8 bits, fake-quant in float64) it runs one
warm-up step, then ``--batches`` timed steps (forward, backward, optimizer step; on CUDA synchronised), and one
timed evaluation pass; an epoch is extrapolated as ``ceil(train / batch)`` steps plus ``ceil(val / batch)``
evaluation passes (CIFAR-10: 45,000 training and 5,000 validation images). QAT adds per epoch two exports of
the integer model (re-calibration and selection, ``--calib`` inputs each, on the CPU) and the integer model's
accuracy on ``--qat-val`` validation inputs (on the CPU), timed once. Random weights and inputs: the time of a
step does not depend on them.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from pqmodel.model import PQNet, build

from . import zoo
from .integer import compute_qat, export_integer, install_qat
from .run import resolve_device
from .train import float_arch, make_optimizer, set_fast_dist


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn: Callable[[], None], n: int, dev: torch.device) -> float:
    fn()  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / n


def step_times(model_name: str, dev: torch.device, batch: int, batches: int, qat_calib: int = 0,
               qat_val: int = 1000) -> dict[str, tuple[float, float]]:
    """{stage: (seconds per training step, seconds per evaluation pass)} at ``batch`` inputs per step; with
    ``qat_calib`` also QAT and its per-epoch overhead (seconds, -1)."""
    arch = zoo.arch(model_name)
    shape = arch["input_shape"]
    n_cls = int(arch["num_classes"])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=gen).to(dev)
    y = torch.randint(0, n_cls, (batch,), generator=gen).to(dev)
    torch.manual_seed(0)
    teacher = build(float_arch(arch)).to(dev)
    out: dict[str, tuple[float, float]] = {}

    def run(name: str, model: nn.Module, opt: torch.optim.Optimizer, distill: bool, evaluates: bool = True) -> None:
        def step() -> None:
            model.train()
            opt.zero_grad()
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if distill:
                with torch.no_grad():
                    target = torch.log_softmax(teacher(x) / 2.0, dim=-1)
                loss = loss + 4.0 * nn.functional.kl_div(torch.log_softmax(logits / 2.0, dim=-1), target,
                                                         reduction="batchmean", log_target=True)
            loss.backward()
            opt.step()

        @torch.no_grad()
        def evaluate() -> None:
            model.eval()
            model(x)

        out[name] = (_timed(step, batches, dev), _timed(evaluate, 1, dev) if evaluates else 0.0)

    run("float (SGD)", teacher, make_optimizer("sgd", list(teacher.parameters()), 0.1, 5e-4), False)
    pq = build(arch).to(dev)
    assert isinstance(pq, PQNet)
    pq.set_assign_mode("ste")
    pq.set_temperature(1.0)
    opt = make_optimizer("adam", list(pq.parameters()), 1e-3, 0.0)
    run("PQ fine-tuning, ste + distillation, element-wise distances", pq, opt, True)
    set_fast_dist(pq, True)
    run("PQ fine-tuning, ste + distillation, matrix-product distances (--fast-dist)", pq, opt, True)
    if qat_calib:
        hosts = zoo.HOST_LAYERS.get(model_name, [])
        calib = torch.rand(qat_calib, *shape, generator=gen)
        pq.eval()
        t0 = time.perf_counter()
        plan = compute_qat(pq, arch, calib, 8, host_layers=hosts)
        t_export = time.perf_counter() - t0
        inet = export_integer(pq, arch, calib, 8, host_layers=hosts)
        xv = torch.rand(min(qat_val, 32), *shape, generator=gen)
        t0 = time.perf_counter()
        inet.accuracy(xv, torch.zeros(xv.shape[0], dtype=torch.long))
        t_val = (time.perf_counter() - t0) / xv.shape[0] * qat_val
        install_qat(pq, plan)
        norms = [m for m in pq.modules() if isinstance(m, nn.BatchNorm2d)]
        opt = make_optimizer("adam", list(pq.parameters()), 1e-4, 0.0)
        base = pq.train

        def frozen_train(mode: bool = True) -> nn.Module:  # batch norm frozen in QAT
            base(mode)
            for m in norms:
                m.eval()
            return pq

        pq.train = frozen_train  # type: ignore[method-assign]
        run("QAT 8 bits (fake-quant in float64; selection: the line below)", pq, opt, True, evaluates=False)
        out["QAT per-epoch overhead: 2 exports + integer validation (CPU)"] = (2 * t_export + t_val, -1.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pqtrain.timing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(zoo.ZOO), default="resnet20")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train", type=int, default=45000, help="training inputs per epoch (CIFAR-10: 45,000)")
    ap.add_argument("--val", type=int, default=5000, help="validation inputs per epoch (CIFAR-10: 5,000)")
    ap.add_argument("--calib", type=int, default=256, help="QAT calibration inputs (0: skip QAT)")
    ap.add_argument("--qat-val", type=int, default=1000, help="QAT's integer validation inputs")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, batch {args.batch_size}, {args.batches} timed steps after one warm-up, on {dev} ({name}); "
          f"torch {torch.__version__}")
    steps, evals = math.ceil(args.train / args.batch_size), math.ceil(args.val / args.batch_size)
    times = step_times(args.model, dev, args.batch_size, args.batches, args.calib, args.qat_val)
    for stage, (s_step, s_eval) in times.items():
        if s_eval < 0:
            print(f"  {stage}: {s_step:.0f} s")
            continue
        epoch = steps * s_step + evals * s_eval
        print(f"  {stage}: {s_step:.3f} s/step, eval {s_eval:.3f} s/batch -> epoch ({steps} steps + {evals} "
              f"eval batches) ~{epoch:.0f} s = {epoch / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
