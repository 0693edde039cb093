"""Muon: the orthogonalised update, a toy problem, the Muon + Adam split, its state through a checkpoint, and
``gatedconv-train --opt muon`` with an interrupted and resumed run."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gatedconv import create_model
from gatedconv.optim import Muon, MuonWithAdam, MuonWithSGD, muon_param_groups, orthogonalize

from conftest import make_tiny_cifar

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48), (16, 3 * 3 * 3)])
def test_orthogonalized_update_has_singular_values_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    g[:, 0] *= 30  # badly conditioned, as momentum buffers are
    o = orthogonalize(g)
    s, s_g = torch.linalg.svdvals(o.float()), torch.linalg.svdvals(g)
    # five quintic steps lift every singular value that is not negligible (above 1% of the largest) into roughly
    # [0.7, 1.2]; the iteration maps singular values monotonically, so the two lists pair up in sorted order
    kept = s[s_g / s_g.max() > 0.01]
    assert o.shape == g.shape and kept.min() > 0.6 and s.max() < 1.3, (s, s_g)
    # the same singular vectors: o is close to U V^T of g
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = torch.nn.functional.cosine_similarity(o.flatten().float(), (u @ vh).flatten(), dim=0)
    assert cos > 0.95


def test_muon_lowers_a_toy_loss_and_refuses_vectors():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(16, 8) * 0.1)
    x = torch.randn(256, 8)
    target = x @ (0.3 * torch.randn(8, 16))  # the optimum: a matrix of spectral norm ~1.5
    opt = Muon([w], lr=0.05)

    def loss():
        return ((x @ w.T - target) ** 2).mean()
    start = loss().item()
    for _ in range(50):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.5 * start
    b = nn.Parameter(torch.zeros(3))
    b.grad = torch.ones(3)
    with pytest.raises(ValueError, match="2-D"):
        Muon([b]).step()


def test_muon_groups_leave_head_and_vectors_to_adam():
    net = create_model("gatedconv", widths=(4, 8, 8, 8, 8), head_hidden=16)
    muon, other = muon_param_groups(net)
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert all(p.ndim >= 2 for p in muon) and any(p is head.weight for p in other)
    assert not any(p is head.weight for p in muon)
    assert len(muon) + len(other) == sum(1 for p in net.parameters() if p.requires_grad)


def test_muon_with_adam_state_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))

    def steps(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    a = copy.deepcopy(net)
    opt_a = MuonWithAdam(*muon_param_groups(a), lr=1e-2, weight_decay=1e-4)
    steps(a, opt_a, 6)
    b = copy.deepcopy(net)
    opt_b = MuonWithAdam(*muon_param_groups(b), lr=1e-2, weight_decay=1e-4)
    steps(b, opt_b, 3)
    torch.save({"model": b.state_dict(), "opt": opt_b.state_dict()}, tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    c = copy.deepcopy(net)
    c.load_state_dict(state["model"])
    opt_c = MuonWithAdam(*muon_param_groups(c), lr=1e-2, weight_decay=1e-4)
    opt_c.load_state_dict(state["opt"])
    steps(c, opt_c, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), net.parameters()))


def test_train_with_muon_resumes_bit_identically(tmp_path):
    data = make_tiny_cifar(tmp_path / "d", n_per_batch=40, n_test=40)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = ["--epochs", "2", "--data-dir", str(data), "--opt", "muon", "--sched", "cosine", "--precision", "fp32",
            "--compile", "off", "--model-kwargs", '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16}',
            "--batch-size", "20", "--eval-batch-size", "50"]

    def train(out, *extra):
        return subprocess.run([sys.executable, "-m", "gatedconv.testing", *extra, "--", *args, "--out", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
    assert train(tmp_path / "ref").returncode == 0
    assert train(tmp_path / "run", "--fault", "kill@13").returncode == -9  # mid-epoch 2, one checkpoint on disk
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "trainf.py"), "--resume", str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optimizer"] == "muon"


def test_muon_with_sgd_matches_torch_sgd_on_its_sgd_groups():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    ref = copy.deepcopy(lin)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    ours = MuonWithSGD([dict(params=list(lin.parameters()), lr=0.1, momentum=0.85, nesterov=True,
                             weight_decay=1e-3, muon=False)])
    theirs = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=1e-3)
    for _ in range(5):
        for net, opt in ((lin, ours), (ref, theirs)):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(lin.parameters(), ref.parameters()))


def test_fast_recipe_with_muon_puts_filters_on_muon_and_trains(tmp_path):
    from gatedconv.data import load_cifar10
    from gatedconv.optim import build_optimizer
    from gatedconv.speedrun import SpeedrunConfig, speedrun

    # batch 20: 5 steps, so the lookahead (every 5 steps, and the final sync to its average) holds trained weights
    cfg = SpeedrunConfig(epochs=1, batch_size=20, eval_batch_size=20, whiten_images=50, precision="fp32",
                         model_kwargs={"widths": [8, 16, 16]}, measure_flops=False, optimizer="muon")
    net = create_model("gatedconv_fast", widths=(8, 16, 16))
    opt = build_optimizer(net, cfg)
    muon = [g for g in opt.param_groups if g["muon"]]
    assert len(muon) == 1 and muon[0]["params"] and all(p.ndim == 4 for p in muon[0]["params"])
    assert muon[0]["lr"] == muon[0]["base_lr"] == 0.24 and muon[0]["momentum"] == 0.6
    assert all(p.ndim != 4 for g in opt.param_groups if not g["muon"] for p in g["params"])
    data = load_cifar10(str(make_tiny_cifar(tmp_path / "d", n_per_batch=20, n_test=20)))
    r = speedrun(cfg, data, 0, tmp_path / "run", print_fn=None)
    assert r["steps"] == 5 and json.loads((tmp_path / "run" / "config.json").read_text())["speedrun"][
        "optimizer"] == "muon"
    # the run's steps moved every filter Muon owns away from the model's initial values (seed 0)
    torch.manual_seed(0)
    init = create_model("gatedconv_fast", **cfg.resolved_model_kwargs()).state_dict()
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model_state"]
    filters = [name for name, p in net.named_parameters() if p.ndim == 4 and p.requires_grad]
    assert filters and all(not torch.equal(trained[name], init[name]) for name in filters)


def test_muon_normalize_holds_each_bank_at_sqrt_rows_and_leaves_zero_banks():
    torch.manual_seed(0)
    w, zero = nn.Parameter(3 * torch.randn(8, 4, 3, 3)), nn.Parameter(torch.zeros(8, 4, 1, 1))
    opt = Muon([w, zero], lr=0.1, momentum=0.6, ns_steps=3, normalize=True)
    w.grad, zero.grad = torch.randn_like(w), torch.randn_like(zero)
    before = w.detach().clone()
    opt.step()
    # the bank was rescaled to norm sqrt(8) before the step, then moved by lr x the orthogonalised update
    update = orthogonalize(w.grad.reshape(8, -1) * 1.6, 3).view_as(w)  # Nesterov: g + 0.6 g on the first step
    assert torch.allclose(w.detach(), before * (8 ** 0.5 / before.norm()) - 0.1 * update, atol=1e-5)
    assert zero.abs().sum() > 0 and zero.norm() < 2  # not divided by its zero norm: it took the plain step
    zero.grad = torch.randn_like(zero)
    opt.step()
    assert zero.norm().item() == pytest.approx(8 ** 0.5, rel=0.3)  # rescaled from the second step on


def test_airbench94_muon_recipe_groups_and_schedule():
    from gatedconv.optim import build_optimizer, group_lr_factor
    from gatedconv.speedrun import RECIPES, SpeedrunConfig, SpeedrunError

    cfg = SpeedrunConfig.from_recipe("airbench94_muon", model_kwargs={"widths": [8, 16, 16]}, epochs=2)
    assert cfg.recipe == "airbench94_muon" and cfg.epochs == 2 and cfg.batch_size == 2000 and not cfg.ema
    assert cfg.model_kwargs == {"head_init": "unit_std", "logit_scale": 1 / 256, "widths": [8, 16, 16]}
    assert RECIPES["airbench94_muon"]["model_kwargs"] == {"head_init": "unit_std", "logit_scale": 1 / 256}
    net = create_model("gatedconv_fast", **cfg.model_kwargs)
    assert net.head.weight.std().item() == pytest.approx(1.0, rel=1e-4)
    groups = {g["name"]: g for g in build_optimizer(net, cfg).param_groups}
    assert groups["bn_bias"]["lr"] == groups["whiten_bias"]["lr"] == 0.053 and groups["head"]["lr"] == 0.67
    for g in groups.values():  # decay per step 2e-6 x batch 2000 in every SGD group, none on Muon's
        assert g["lr"] * g["weight_decay"] == pytest.approx(0.0 if g["muon"] else 0.004)
    assert groups["muon"]["ns_steps"] == 3 and groups["muon"]["normalize"] and groups["muon"]["lr"] == 0.24
    assert all(p.ndim == 4 for p in groups["muon"]["params"]) and groups["other"]["params"]  # the gates
    # linear 1 -> 0 over the run, the whitening bias 1 -> 0 over its 3 epochs (25 steps each here)
    total, per_epoch = 200, 25
    assert [group_lr_factor(groups["muon"], s, total, cfg, per_epoch) for s in (0, 100, 199)] == pytest.approx([1, 0.5, 0.005])
    wb = groups["whiten_bias"]
    assert [group_lr_factor(wb, s, total, cfg, per_epoch) for s in (0, 30, 75, 100)] == pytest.approx([1, 0.6, 0, 0])
    assert group_lr_factor(wb, 30, total, SpeedrunConfig(), per_epoch) == pytest.approx(0.2 + 0.8 * 30 / 46)
    with pytest.raises(SpeedrunError, match="unknown recipe"):
        SpeedrunConfig.from_recipe("airbench96")


def test_speedrun_cli_recipe_keeps_its_values_unless_a_flag_is_given(tmp_path):
    data = make_tiny_cifar(tmp_path / "d", n_per_batch=20, n_test=20)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "gatedconv.cli.speedrun", "--recipe", "airbench94_muon", "--data-dir", str(data),
           "--out", str(out), "--epochs", "1", "--batch-size", "25", "--eval-batch-size", "20", "--whiten-images",
           "50", "--precision", "fp32", "--widths", "8,16,16", "--paths", "3", "--no-flops", "--figures", "", "-q"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("mean ") and " over 1 seeds, " in p.stdout
    sr = json.loads((out / "seed0" / "config.json").read_text())["speedrun"]
    assert sr["recipe"] == "airbench94_muon" and sr["optimizer"] == "muon" and sr["lr_form"] == "direct"
    assert sr["epochs"] == 1 and sr["batch_size"] == 25 and sr["ema"] is False and sr["muon_ns_steps"] == 3
    assert sr["model_kwargs"] == {"head_init": "unit_std", "logit_scale": 1 / 256, "widths": [8, 16, 16],
                                  "kernel_sizes": [3]}
    bad = subprocess.run(cmd[:3] + ["--recipe", "nope"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
