"""End-to-end checks of the package on a CUDA machine, in a few minutes on one GPU.

    bash benchmarks/gpu_check.sh            (or: python benchmarks/gpu_check.py [--nproc N])

Steps, each recorded as passed or failed (a failure does not stop the others):

* ``trainf_fp16``: ``trainf`` with fp16 autocast and a ``GradScaler``, channels-last, a few epochs;
* ``trainf_bf16``: the same in bf16 (skipped on GPUs without bf16);
* ``channels_last``: the network gives the same outputs in NCHW and channels-last, and the speed of each;
* ``compiled_sum``: ``gatedconv.kernels.compiled_sum`` (the torch.compile'd gated sum) gives the eager loss and
  gradients, and the speed of each;
* ``deployed_inference``: the study's plain, constant-mix and dynamic networks deployed (``reparameterize``) give
  the trained networks' outputs, and their latency at batch 1 and 128 against the plain network's;
* ``main_epoch``: one epoch of the main job, ``gatedconv-train --epochs 1 --device cuda``, on CIFAR-10 when
  ``$CIFAR10_DIR`` holds it, else on generated data (``write_fake_cifar``; the record says which): the time
  per epoch and images per second;
* ``load_model``: ``gatedconv.load_model`` on that run reproduces the accuracy in its ``final.json``;
* ``torchrun``: ``gatedconv-train`` under ``torchrun --nproc_per_node=N`` (default 1) with ``--device cuda``;
* ``nccl``: an NCCL all-reduce under ``torchrun --nproc_per_node=N`` (with one process ``gatedconv-train``
  does not create a process group, so this is what exercises NCCL).

The ``trainf`` steps use a few hundred images (real ones when ``$CIFAR10_DIR`` is set). Everything measured
goes to ONE file, ``$OUT/gpu_check.json`` if ``$OUT`` is set, else ``gpu_check.json`` in the current
directory, rewritten after every step: the GPU name, torch and CUDA versions, the data used, and per step
``ok`` (true / false / null for skipped), ``seconds`` and its figures (or ``error``). Exit status 0 when every
step passed or was skipped, 1 otherwise. Without a CUDA device it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKIP_LINE = "no CUDA device: GPU checks skipped"
ROOT = Path(__file__).resolve().parent.parent
TINY_SUBSET = 512  # images for the trainf steps
TRAIN_EPOCHS = 3


class Report:
    """The JSON record, rewritten after every step so a run cut short still leaves what it measured."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        self.data = {**header, "steps": {}}
        self.write()

    def write(self) -> None:
        self.data["passed"] = all(s["ok"] is not False for s in self.data["steps"].values())
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def step(self, name: str, fn, *args) -> dict:
        t0 = time.perf_counter()
        try:
            details = fn(*args) or {}
            ok = None if details.get("skipped") else True
        except Exception as e:  # every step is recorded; the next one still runs
            text = str(e).strip().splitlines()
            details, ok = {"error": f"{type(e).__name__}: {text[0] if text else ''}"}, False
        self.data["steps"][name] = {"ok": ok, "seconds": round(time.perf_counter() - t0, 2), **details}
        self.write()
        status = {True: "ok", False: "FAILED", None: "skipped"}[ok]
        print(f"{name}: {status} ({self.data['steps'][name]['seconds']} s) "
              f"{json.dumps({k: v for k, v in details.items()})}", flush=True)
        return details


def _out_path() -> Path:
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out) / "gpu_check.json"
    return Path("gpu_check.json").resolve()


def _prepare_data(tmp: Path) -> tuple:
    """(data directory, label): CIFAR-10 from $CIFAR10_DIR when it loads, else generated data."""
    from gatedconv.data import DataError, load_cifar10, write_fake_cifar
    real = os.environ.get("CIFAR10_DIR")
    if real:
        try:
            load_cifar10(real, download=False, expect_full=True)
            return Path(real), f"CIFAR-10 from $CIFAR10_DIR ({real})"
        except DataError as e:
            print(f"note: $CIFAR10_DIR not usable ({e}); using generated data", flush=True)
    root = write_fake_cifar(tmp / "data", n_per_batch=1000, n_test=1000)
    return root, "generated (write_fake_cifar: 5,000 train / 1,000 test images, not CIFAR-10)"


def _batches(data_dir: Path, n: int):
    import torch
    from gatedconv.data import TensorBatches, load_cifar10
    d = load_cifar10(str(data_dir), download=False).subset(n, n)
    mean, std = d.mean_std()
    kw = dict(mean=mean, std=std, device=torch.device("cuda"), channels_last=True)
    return (TensorBatches(d.train_x, d.train_y, 64, train=True, augment=True, **kw),
            TensorBatches(d.test_x, d.test_y, 256, **kw))


def check_trainf(data_dir: Path, precision: str) -> dict:
    """trainf on a few hundred images with autocast in ``precision`` (fp16: with a GradScaler)."""
    import torch
    from torch import nn
    from gatedconv import create_model, trainf
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        return {"skipped": f"{torch.cuda.get_device_name()} has no bf16"}
    torch.manual_seed(0)
    net = create_model("gatedconv")
    train_iter, test_iter = _batches(data_dir, TINY_SUBSET)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    hist = trainf(net, train_iter, test_iter, nn.CrossEntropyLoss(), TRAIN_EPOCHS,
                  torch.optim.Adam(net.parameters(), lr=1e-3), "cuda", precision=precision, channels_last=True,
                  grad_scaler=scaler, animator=None, progress=False, quiet=True)
    losses = [round(r["train_loss"], 4) for r in hist.epochs]
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite training loss {losses}")
    weight = next(m.weight for m in net.modules() if isinstance(m, nn.Conv2d))
    if not weight.is_contiguous(memory_format=torch.channels_last):
        raise RuntimeError("trainf(channels_last=True) left the conv weights in NCHW")
    out = {"images": len(train_iter.labels), "epochs": TRAIN_EPOCHS, "train_loss": losses,
           "test_acc": round(hist.epochs[-1]["test_acc"], 4),
           "examples_per_sec": round(hist.epochs[-1]["examples_per_sec"], 1)}
    if scaler is not None:
        out["grad_scale"] = float(scaler.get_scale())
    return out


def _train_speed(net, x, y, steps: int = 20) -> float:
    """Images per second of fp16-autocast training steps on one batch (after 3 warm-up steps)."""
    import torch
    from torch import nn
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return round(steps * x.shape[0] / (time.perf_counter() - t0), 1)


def _relative_error(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def check_channels_last() -> dict:
    """Same logits in NCHW and channels-last (fp32, eval), and the training speed of each layout."""
    import torch
    from gatedconv import create_model
    torch.manual_seed(0)
    net = create_model("gatedconv").cuda().eval()
    x = torch.randn(256, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (256,), device="cuda")
    with torch.no_grad():
        ref = net(x)
        net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last))
    err = _relative_error(out, ref)
    if err > 1e-2:  # TF32 convolutions in either layout differ by ~1e-3
        raise RuntimeError(f"channels-last logits differ from NCHW by {err:.2e} (relative)")
    nchw = _train_speed(net.train(), x, y)
    nhwc = _train_speed(net_cl.train(), x.contiguous(memory_format=torch.channels_last), y)
    return {"max_relative_error": err, "train_img_per_sec_nchw": nchw, "train_img_per_sec_channels_last": nhwc}


def check_compiled_sum() -> dict:
    """The compiled gated sum against the eager one: loss and gradients of one training step, then speed."""
    import torch
    from torch import nn
    from gatedconv import create_model
    from gatedconv.kernels import _compiled, compiled_sum
    torch.manual_seed(0)
    eager = create_model("gatedconv").cuda().train()
    comp = copy.deepcopy(eager)
    x = torch.randn(128, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (128,), device="cuda")
    t0 = time.perf_counter()
    with compiled_sum(comp):
        torch.manual_seed(1)  # the same dropout masks in both models
        loss_c = nn.functional.cross_entropy(comp(x), y)
        loss_c.backward()
        torch.cuda.synchronize()
        first_call = time.perf_counter() - t0
        if not _compiled:
            raise RuntimeError("compiled_sum was on but no compiled gated sum ran")
        torch.manual_seed(1)
        loss_e = nn.functional.cross_entropy(eager(x), y)
        loss_e.backward()
        grad_err = max(_relative_error(pc.grad, pe.grad)
                       for pc, pe in zip(comp.parameters(), eager.parameters()) if pe.grad is not None)
        loss_c, loss_e = loss_c.item(), loss_e.item()
        loss_err = abs(loss_c - loss_e) / max(abs(loss_e), 1e-12)
        if loss_err > 1e-3 or grad_err > 1e-2:
            raise RuntimeError(f"compiled sum differs from eager: loss {loss_err:.2e}, gradients {grad_err:.2e}")
        speed_c = _train_speed(comp, x, y)
    return {"loss_relative_error": loss_err, "grad_max_relative_error": grad_err, "compiled": sorted(_compiled),
            "first_call_seconds": round(first_call, 1), "train_img_per_sec_eager": _train_speed(eager, x, y),
            "train_img_per_sec_compiled": speed_c}


def _run(cmd: list, timeout: int) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)  # the installed package
    if p.returncode != 0:
        tail = [line for line in (p.stderr or p.stdout).splitlines() if line.strip()][-1:] or ["(no output)"]
        raise RuntimeError(f"exit {p.returncode}: {tail[0]}")
    return p


def _train_cmd(data_dir: Path, out: Path, *extra: str) -> list:
    return ["-m", "gatedconv.cli.train", "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out),
            "--device", "cuda", *extra]


def check_main_epoch(data_dir: Path, label: str, run_dir: Path) -> dict:
    """One epoch of the main job; its time per epoch from metrics.csv."""
    t0 = time.perf_counter()
    _run([sys.executable, *_train_cmd(data_dir, run_dir)], timeout=900)
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    final = json.loads((run_dir / "final.json").read_text())
    return {"data": label, "seconds_per_epoch": round(float(row["seconds"]), 2),
            "examples_per_sec": round(float(row["examples_per_sec"]), 1), "command_seconds": round(wall, 1),
            "test_acc_fp32": final.get("test_acc_fp32")}


def check_load_model(data_dir: Path, run_dir: Path) -> dict:
    """load_model on the main epoch's run reproduces its reported fp32 accuracy, on the GPU and on the CPU."""
    from gatedconv import load_model
    from gatedconv.data import load_cifar10
    from gatedconv.train import evaluate_images
    final = json.loads((run_dir / "final.json").read_text())
    d = load_cifar10(str(data_dir), download=False)
    gpu = evaluate_images(load_model(run_dir, device="cuda"), d.test_x, d.test_y)["top1"]
    cpu = evaluate_images(load_model(run_dir, device="cpu"), d.test_x[:1000], d.test_y[:1000])["top1"]
    gpu_1000 = evaluate_images(load_model(run_dir, device="cuda"), d.test_x[:1000], d.test_y[:1000])["top1"]
    if abs(gpu - final["test_acc_fp32"]) > 2e-3 or abs(cpu - gpu_1000) > 5e-3:
        raise RuntimeError(f"reloaded accuracy {gpu:.4f} (GPU), {cpu:.4f} (CPU, first 1000) vs reported "
                           f"{final['test_acc_fp32']:.4f}")
    return {"reported": final["test_acc_fp32"], "reloaded_gpu": gpu, "reloaded_cpu_first_1000": cpu,
            "reloaded_gpu_first_1000": gpu_1000}


def _torchrun(nproc: int) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def check_torchrun(data_dir: Path, run_dir: Path, nproc: int) -> dict:
    _run([*_torchrun(nproc), *_train_cmd(data_dir, run_dir, "--first-1000")], timeout=600)
    cfg = json.loads((run_dir / "config.json").read_text())
    final = json.loads((run_dir / "final.json").read_text())
    return {"nproc_per_node": nproc, "world_size": cfg.get("world_size"), "device": cfg.get("device_resolved"),
            "test_acc": final.get("test_acc")}


def check_nccl(nproc: int) -> dict:
    p = _run([*_torchrun(nproc), str(Path(__file__).resolve()), "--nccl-worker"], timeout=300)
    lines = [json.loads(line[line.index("{"):]) for line in p.stdout.splitlines() if '"rank"' in line]
    if not lines or not all(r["ok"] for r in lines):
        raise RuntimeError(f"all-reduce gave {lines}")
    return {"nproc_per_node": nproc, "backend": lines[0]["backend"], "nccl_version": lines[0]["nccl"]}


def nccl_worker() -> int:
    """Inside torchrun: an NCCL all-reduce of ones must give the world size on every rank."""
    import torch
    import torch.distributed as dist
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    t = torch.ones(4, device="cuda")
    dist.all_reduce(t)
    torch.cuda.synchronize()
    ok = bool((t == dist.get_world_size()).all())
    version = torch.cuda.nccl.version()
    version = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    print(json.dumps({"rank": rank, "ok": ok, "backend": dist.get_backend(), "nccl": version}), flush=True)
    dist.destroy_process_group()
    return 0 if ok else 1


def check_deployed_inference() -> dict:
    """The deployed forms (``gatedconv.reparameterize``) on the GPU, as ``benchmarks/bench_infer.py`` measures
    them on a CPU: each deployed network computes its trained one's function, and its latency at batch 1 and batch
    128 (fp32, eval, channels-last, interleaved rounds) against the plain network's."""
    import statistics

    import torch
    from gatedconv import create_model, reparameterize
    from gatedconv.study import variant_kwargs

    nets, figures = {}, {}
    for v in ("plain", "fixed_mix", "dyconv", "condconv"):
        torch.manual_seed(0)
        trained = create_model("gatedconv", **variant_kwargs(v)).cuda().eval()
        nets[v] = reparameterize(trained).to(memory_format=torch.channels_last)
        x = torch.randn(8, 3, 32, 32, device="cuda")
        with torch.no_grad():
            err = _relative_error(nets[v](x.contiguous(memory_format=torch.channels_last)), trained(x))
        if err > 1e-2:  # TF32 convolutions differ by ~1e-3
            raise RuntimeError(f"deployed {v} differs from the trained network by {err:.2e} (relative)")
        figures[f"{v}_max_relative_error"] = err
    for b in (1, 128):
        x = torch.randn(b, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
        times = {v: [] for v in nets}
        with torch.no_grad():
            for net in nets.values():  # warm-up: cuDNN's algorithm choice, the allocator
                net(x), net(x)
            for _ in range(11):
                for v, net in nets.items():
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    for _ in range(10):
                        net(x)
                    torch.cuda.synchronize()
                    times[v].append((time.perf_counter() - t) / 10)
        for v in nets:
            figures[f"{v}_b{b}_ms"] = round(1000 * statistics.median(times[v]), 3)
            figures[f"{v}_b{b}_x"] = round(statistics.median(a / p for a, p in zip(times[v], times["plain"])), 3)
    return figures


def _header(torch) -> dict:
    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(), "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
            "torch": torch.__version__, "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported(),
            "python": sys.version.split()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=1, help="processes for the torchrun steps (default 1)")
    p.add_argument("--nccl-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch
    if args.nccl_worker:
        return nccl_worker()
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    report = Report(_out_path(), _header(torch))
    print(f"{report.data['gpu']} | torch {report.data['torch']} | CUDA {report.data['cuda']} -> {report.path}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, label = _prepare_data(tmp)
        report.data["data"] = label
        report.step("trainf_fp16", check_trainf, data_dir, "fp16")
        report.step("trainf_bf16", check_trainf, data_dir, "bf16")
        report.step("channels_last", check_channels_last)
        report.step("compiled_sum", check_compiled_sum)
        report.step("deployed_inference", check_deployed_inference)
        report.step("main_epoch", check_main_epoch, data_dir, label, tmp / "main")
        report.step("load_model", check_load_model, data_dir, tmp / "main")
        report.step("torchrun", check_torchrun, data_dir, tmp / "ddp", args.nproc)
        report.step("nccl", check_nccl, args.nproc)
    print(f"{'all steps passed' if report.data['passed'] else 'SOME STEPS FAILED'}: {report.path}")
    return 0 if report.data["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
