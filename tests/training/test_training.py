"""The training loop: penalised objective goes down, checkpoints resume exactly, CLI wiring."""

import json
import math
import signal

import pytest
import torch
from typer.testing import CliRunner

from lcnn_audit.cli import app
from lcnn_audit.data import load_data
from lcnn_audit.errors import ConfigError, ResumeError, UsageError
from lcnn_audit.loading import load_model
from lcnn_audit.penalties import PenaltyConfig
from lcnn_audit.training import (
    CHECKPOINT_NAME,
    LOG_NAME,
    AdversarialTraining,
    StopFlag,
    TrainConfig,
    augment,
    init_model,
    make_optimizer,
    make_scheduler,
    resolve_augment,
    train,
)

ARCH = {"width": 2, "act": "softplus", "beta": 5.0}


@pytest.fixture(scope="module")
def data():
    return load_data("demo", "train", n=48, seed=1), load_data("demo", "test", n=24, seed=2)


def model(convert=False, seed=0):
    return init_model("small_cnn", ARCH, dataset="demo", seed=seed, convert=convert, input_shape=(1, 28, 28))


def config(**kw):
    base = dict(epochs=2, batch_size=16, lr=0.05, curvature_n=4, eval_batch_size=64, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def strip_times(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in history]


RESUME_CASES = {
    "penalties+augment, stop mid-epoch": dict(
        convert=False, stop_at=(1, 2), cfg=dict(augment="crop-flip", penalties=PenaltyConfig(
            gradreg=1e-2, cure=1.0, cure_h=0.1, cure_h_warmup=1.5, jacobian=1e-3, cross_lipschitz=1e-3))),
    "lcnn+pgd, stop at epoch end": dict(
        convert=True, stop_at=(1, 3), cfg=dict(penalties=PenaltyConfig(lambda_beta=1e-2, lambda_gamma=1e-2),
                                               adversarial=AdversarialTraining("l2", 0.1, 2), optimizer="adam",
                                               lr=1e-3, schedule="cosine")),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_interrupted_and_resumed_run_ends_with_identical_weights(case, data, tmp_path):
    spec = RESUME_CASES[case]
    tr, te = data
    cfg = config(**spec["cfg"])
    full = model(spec["convert"])
    res_full = train(full, tr, te, cfg, run_dir=tmp_path / "full")
    assert res_full.complete and len(res_full.summary["epochs"]) == 2

    stop = StopFlag()
    stop_epoch, stop_step = spec["stop_at"]

    def on_step(info):
        if (info.epoch, info.step) == (stop_epoch, stop_step):
            stop.request()

    part = model(spec["convert"])
    res_part = train(part, tr, te, cfg, run_dir=tmp_path / "part", on_step=on_step, stop=stop)
    assert not res_part.complete
    ck = torch.load(tmp_path / "part" / CHECKPOINT_NAME, weights_only=True)
    assert (ck["epoch"], ck["step"]) == ((0, 2) if stop_step == 2 else (1, 0))
    assert set(ck["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert ck["recipe"]["arch"] == "small_cnn" and ("convert" in ck["recipe"])
    log = json.loads((tmp_path / "part" / LOG_NAME).read_text())
    assert log["complete"] is False and log["command"] == "finetune"

    torch.manual_seed(12345)  # a different global RNG state: the checkpoint's must be restored
    resumed = model(spec["convert"])
    with torch.no_grad():  # different weights: the checkpoint's must win
        for p in resumed.parameters():
            p.add_(torch.randn_like(p))
    res = train(resumed, tr, te, cfg, run_dir=tmp_path / "part", resume=True)
    assert res.complete
    assert same_weights(full, resumed)
    assert strip_times(res.summary["epochs"]) == strip_times(res_full.summary["epochs"])


def test_ctrl_c_checkpoints_and_exits_cleanly(data, tmp_path):
    tr, te = data

    def on_step(info):
        if info.step == 1:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends; the loop turns it into a clean stop

    m = model()
    res = train(m, tr, te, config(), run_dir=tmp_path, on_step=on_step)
    assert not res.complete and res.summary["epochs_done"] == 0
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.parametrize("penalty", ["gradreg", "cure", "jacobian", "cross_lipschitz", "lcnn"])
def test_a_few_steps_lower_the_penalised_objective(penalty, data):
    """Full-batch steps on a fixed sample: each epoch's objective is the penalised objective at
    the start of its one step, so the records trace it along the optimisation."""
    tr, _ = data
    tr = load_data("demo", "train", n=32, seed=5)
    weights = {"gradreg": dict(gradreg=1.0), "cure": dict(cure=0.1, cure_h=0.5),
               "jacobian": dict(jacobian=1e-2, jacobian_probes=0),
               "cross_lipschitz": dict(cross_lipschitz=1e-1, cross_lipschitz_probes=0),
               "lcnn": dict(lambda_beta=1e-1, lambda_gamma=1e-1)}[penalty]
    m = model(convert=penalty == "lcnn")
    cfg = config(epochs=6, batch_size=32, lr=0.02, schedule="constant", weight_decay=0.0, curvature_n=0,
                 penalties=PenaltyConfig(**weights))
    res = train(m, tr, None, cfg, handle_sigint=False)
    hist = res.summary["epochs"]
    assert [list(h["penalties"]) for h in hist] == [[penalty]] * 6
    assert all(h["penalties"][penalty] > 0 for h in hist)
    objective = [h["objective"] for h in hist]
    assert objective[-1] < objective[0]
    assert all(math.isclose(h["objective"], h["train_loss"] + h["penalties"][penalty], rel_tol=1e-5) for h in hist)


def test_output_loads_in_every_command_and_matches(data, tmp_path):
    tr, te = data
    m = model(convert=True)
    out = tmp_path / "lcnn.safetensors"
    res = train(m, tr, te, config(epochs=1, penalties=PenaltyConfig(lambda_beta=1e-4, lambda_gamma=1e-5)),
                run_dir=tmp_path / "run", output=out)
    assert res.summary["output"] == str(out)
    loaded = load_model(out)
    assert loaded.recipe["convert"] and loaded.recipe["normalize"] == [[0.286], [0.353]]
    x = te.get(torch.arange(8)).x
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    # resuming a finished run trains no further and rewrites the same output
    fresh = model(convert=True)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    again = train(fresh, tr, te, config(epochs=1, penalties=PenaltyConfig(lambda_beta=1e-4, lambda_gamma=1e-5)),
                  run_dir=tmp_path / "run", output=tmp_path / "again.safetensors", resume=True)
    assert again.complete and len(again.summary["epochs"]) == 1
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "again.safetensors")(x), m(x), rtol=0, atol=0)


def test_resume_guards(data, tmp_path):
    tr, te = data
    stop = StopFlag()
    stop.request()
    train(model(), tr, te, config(), run_dir=tmp_path, stop=stop)
    with pytest.raises(UsageError, match="pass --resume"):
        train(model(), tr, te, config(), run_dir=tmp_path)
    with pytest.raises(ResumeError, match=r"train\.lr \(0\.05 -> 0\.1\)"):
        train(model(), tr, te, config(lr=0.1), run_dir=tmp_path, resume=True)


def test_weight_decay_skips_beta_and_gamma():
    m = model(convert=True)
    opt = make_optimizer(m, config(weight_decay=1e-3))
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    names = {id(p): n for n, p in m.named_parameters()}
    assert len(no_decay) == 1
    got = sorted(names[id(p)].rsplit(".", 1)[-1] for p in no_decay[0]["params"])
    assert got == ["gamma_raw"] * 4 + ["log_beta"] * 4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))


def test_schedules_and_config_validation():
    cosine = [0.5 * (1 + math.cos(math.pi * s / 12)) for s in range(8)]
    for schedule, expect in [("multistep", [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]), ("constant", [1] * 8),
                             ("cosine", cosine)]:
        cfg = config(epochs=6, schedule=schedule, milestones=(2, 3))
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, cfg, steps_per_epoch=2)  # per-step: milestones at steps 4 and 6
        lrs = []
        for _ in range(8):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs == pytest.approx(expect), schedule
    assert config(epochs=200).milestone_epochs() == [150, 175]
    with pytest.raises(ConfigError) as err:
        config(epochs=-1, optimizer="lbfgs", lr=0, augment="mixup", penalties=PenaltyConfig(gradreg=-1),
               adversarial=AdversarialTraining("l1", 0, 0)).validate()
    assert len(err.value.problems) == 8


def test_augmentation():
    x = torch.rand(6, 3, 32, 32)
    assert resolve_augment("auto", (3, 32, 32)) == "crop-flip" and resolve_augment("auto", (1, 28, 28)) == "none"
    assert augment(x, "none", torch.Generator()) is x
    a = augment(x, "crop-flip", torch.Generator().manual_seed(1))
    b = augment(x, "crop-flip", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    flipped = augment(x, "flip", torch.Generator().manual_seed(2))
    for i in range(6):  # each sample is either itself or its mirror image
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    cropped = augment(x, "crop", torch.Generator().manual_seed(3), pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):  # each sample is a 32x32 window of its zero-padded image
        assert any(torch.equal(cropped[i], padded[i, :, r:r + 32, c:c + 32]) for r in range(5) for c in range(5))


def test_cli_from_scratch_resume_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.safetensors"
    args = ["finetune", "--from-scratch", "--convert", "--arch", "small_cnn", "--arch-kwargs",
            "width=2,act=softplus,beta=5", "--n", "32", "--eval-n", "16", "--curvature-n", "2", "--epochs", "1",
            "--batch-size", "16", "--lcnn", "--gradreg", "1e-3", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert out.exists() and (tmp_path / "m.run" / LOG_NAME).exists()
    log = json.loads((tmp_path / "m.run" / LOG_NAME).read_text())
    assert log["complete"] and set(log["summary"]["epochs"][0]["penalties"]) == {"lcnn", "gradreg"}
    assert log["config"]["train"]["penalties"]["lambda_beta"] == 1e-4
    assert load_model(out).recipe["convert"]["version"] == 1
    # fine-tuning a checkpoint (the bundled ReLU demo model), converted on the way
    tuned = tmp_path / "demo_lcnn.safetensors"
    res = runner.invoke(app, ["finetune", "demo", "--convert", "--lcnn", "--n", "32", "--eval-n", "16",
                              "--curvature-n", "0", "--epochs", "1", "--batch-size", "16", "-o", str(tuned)])
    assert res.exit_code == 0, res.output
    assert load_model(tuned).recipe["convert"] and json.loads(
        (tmp_path / "demo_lcnn.run" / LOG_NAME).read_text())["config"]["train"]["lr"] == 0.01
    cur = runner.invoke(app, ["curvature", str(out), "--n", "4", "--json", str(tmp_path / "c.json")])
    assert cur.exit_code == 0, cur.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --resume" in again.output
    assert runner.invoke(app, args + ["--resume"]).exit_code == 0
    for bad, msg in [(["finetune", "--from-scratch", "-o", str(out)], "needs --arch"),
                     (["finetune", "demo", "--from-scratch", "--arch", "small_cnn", "-o", str(out)], "drop CHECKPOINT"),
                     (["finetune", "-o", str(out)], "no checkpoint given"),
                     (["finetune", "demo", "--lcnn", "--epochs", "1", "-o", str(out), "--run-dir",
                       str(tmp_path / "x")], "convert it first"),
                     (["finetune", "demo", "--optimizer", "lbfgs", "-o", str(out)], "unknown optimizer")]:
        r = runner.invoke(app, bad)
        assert r.exit_code == 2, (bad, r.output)
        assert msg in " ".join(r.output.split()), r.output
