"""The CLI -> library contract (as fastapi-cli's tests do it): each command, run through the
real CLI, hands the ``lcnn_audit.audits.*`` function exactly the options and keyword arguments
its flags say; without flags, exactly the options classes' defaults. And every shared option
(``--n/--num-samples``, ``--seed``, ``--json``, ...) is the same option on every command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lcnn_audit.attacks.options import AttackOptions
from lcnn_audit.audits.registry import AUDITS
from lcnn_audit.bound.options import BoundOptions
from lcnn_audit.cli import app
from lcnn_audit.convert_options import ACTIVATION_KINDS, ConvertOptions
from lcnn_audit.geometry.options import CurvatureOptions, DiscrepancyOptions, GradRobustnessOptions
from lcnn_audit.training.config import AdversarialTraining, PenaltyConfig, TrainConfig

runner = CliRunner()

#: the options every command that reads data or writes results takes, the same way
SHARED = ("--n", "--csv", "--data-root", "--seed", "--batch-size", "--device", "--json", "--quiet", "--verbose",
          "--threads", "--single-split", "--download")
#: (command, option) pairs that are another option of the same name, on purpose
OWN = {("demo", "--n"),  # the size of the bundled sample (default 256), not a subset of user data
       ("gate", "--json")}  # the verdict (gate checks result JSONs; its own JSON is another kind of file)


class Called(Exception):
    """Raised by the stand-in library function once it has recorded its arguments."""


@pytest.fixture
def record(monkeypatch):
    """``record("lcnn_audit.audits.curvature.run")``: replace that function by one that keeps
    its arguments (returned dict) and stops the command."""

    def patch(target: str) -> dict:
        calls: dict = {}

        def fake(*args, **kwargs):
            calls.update(args=args, kwargs=kwargs)
            raise Called

        monkeypatch.setattr(target, fake)
        return calls

    return patch


def invoke(*args) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert isinstance(res.exception, Called), res.output


def _options(calls: dict):
    return calls["kwargs"].get("options", calls["args"][2] if len(calls["args"]) > 2 else None)


# ---------------------------------------------------------------------------- one test per command


def test_curvature(record):
    calls = record("lcnn_audit.audits.curvature.run")
    invoke("curvature", "demo", "--tol", "0.01", "--max-iter", "7", "--seed", "3", "--batch-size", "16", "--n", "5",
           "--method", "power", "--fd-h", "0.5", "--dtype", "float64")
    assert _options(calls) == CurvatureOptions(tol=0.01, max_iter=7, seed=3, method="power", fd_h=0.5,
                                               dtype="float64")
    assert calls["kwargs"]["batch_size"] == 16 and len(calls["args"][1]) == 5
    assert calls["kwargs"]["state_path"] is None and calls["kwargs"]["resume"] is False


def test_curvature_resume_state(record, tmp_path):
    calls = record("lcnn_audit.audits.curvature.run")
    invoke("curvature", "demo", "--n", "4", "--json", tmp_path / "r.json", "--resume")
    kw = calls["kwargs"]
    assert kw["state_path"] == tmp_path / "r.json.partial" and kw["resume"] is True and kw["keep_state"] is True


def test_grad_robustness(record):
    calls = record("lcnn_audit.audits.grad_robustness.run")
    invoke("grad-robustness", "demo", "--n", "4", "--radii", "0.01,0.1", "--draws", "2", "--adversarial",
           "--adv-steps", "3", "--target", "logit", "--smooth-relu", "100", "--seed", "3", "--batch-size", "8")
    assert _options(calls) == GradRobustnessOptions(
        radii=(0.01, 0.1), draws=2, adversarial=True, adv_steps=3,
        curvature=CurvatureOptions(target="logit", smooth_relu=100.0, seed=3))
    assert calls["kwargs"]["batch_size"] == 8


def test_grad_robustness_compare(record):
    calls = record("lcnn_audit.audits.grad_robustness.compare")
    invoke("grad-robustness", "demo", "--compare", "demo", "--n", "4", "--draws", "3", "--batch-size", "8")
    assert _options(calls) == GradRobustnessOptions(draws=3)
    assert calls["kwargs"]["batch_size"] == 8 and len(calls["args"][1]) == 4


def test_discrepancy(record):
    calls = record("lcnn_audit.audits.discrepancy.run")
    invoke("discrepancy", "demo", "--n", "6", "--target", "logit", "--smooth-relu", "1000", "--seed", "2",
           "--batch-size", "32")
    assert _options(calls) == DiscrepancyOptions(curvature=CurvatureOptions(target="logit", smooth_relu=1000.0,
                                                                            seed=2))
    kw = calls["kwargs"]
    assert kw["batch_size"] == 32 and len(kw["train_data"]) == 6 and len(calls["args"][1]) == 6
    assert kw["train_data"].split == "train" and calls["args"][1].split == "test"


def test_attack(record):
    calls = record("lcnn_audit.audits.attack.run")
    invoke("attack", "demo", "--n", "4", "--attack", "fgsm,pgd", "--norm", "linf", "--eps", "1/255,2/255",
           "--steps", "3", "--restarts", "2", "--loss", "margin", "--no-masking-checks", "--eot", "2",
           "--bpda", "net.0", "--cw-lr", "0.5", "--seed", "4", "--batch-size", "2")
    assert _options(calls) == AttackOptions(attacks=("fgsm", "pgd"), norms=("linf",), eps=(1 / 255, 2 / 255), steps=3,
                                            restarts=2, loss="margin", masking_checks=False, eot=2, bpda=("net.0",),
                                            cw_lr=0.5, seed=4)
    assert calls["kwargs"]["batch_size"] == 2 and calls["kwargs"]["save_adv"] is None


def test_bound(record):
    calls = record("lcnn_audit.audits.bound.run")
    invoke("bound", "demo", "--input-shape", "1,28,28", "--lambda-beta", "0.5", "--lambda-gamma", "0.25",
           "--tol", "1e-5", "--max-iter", "9")
    assert _options(calls) == BoundOptions(input_shape=(1, 28, 28), lambda_beta=0.5, lambda_gamma=0.25, tol=1e-5,
                                           max_iter=9)
    assert calls["args"][1] is None  # no --data: no samples read


def test_bound_reads_one_sample_for_the_shape(record):
    calls = record("lcnn_audit.audits.bound.run")
    invoke("bound", "demo", "--data", "demo")
    assert len(calls["args"][1]) == 1 and _options(calls) == BoundOptions()


def test_convert(record, tmp_path):
    calls = record("lcnn_audit.audits.convert.convert")
    out = tmp_path / "m.safetensors"
    invoke("convert", "demo", "-o", out, "--data", "demo", "--n", "6", "--seed", "1", "--batch-size", "3",
           "--kinds", "relu", "--beta-init", "3", "--no-batchnorm", "--gamma-init", "4", "--no-fold-bn",
           "--power-iterations", "2", "--tol", "1e-4", "--max-iter", "7", "--no-fx")
    assert calls["args"][1] == ConvertOptions(activation_kinds=("relu",), beta_init=3.0, batchnorm=False,
                                              gamma_init=4.0, fold_into_bn=False, n_power_iterations=2, tol=1e-4,
                                              max_iter=7, use_fx=False)
    kw = calls["kwargs"]
    assert kw["output"] == out and kw["batch_size"] == 3 and len(kw["data"]) == 6 and kw["input_shape"] is None


def test_finetune(record, tmp_path):
    calls = record("lcnn_audit.audits.finetune.finetune")
    invoke("finetune", "demo", "--out", tmp_path / "m.safetensors", "--n", "12", "--eval-n", "6",
           "--curvature-n", "0", "--seed", "5", "--batch-size", "4", "--epochs", "2", "--optimizer", "adam",
           "--lr", "0.05", "--schedule", "cosine", "--milestones", "1", "--gradreg", "0.001", "--cure", "2",
           "--cure-h", "0.25", "--adv-train", "L2", "--adv-eps", "0.2", "--adv-steps", "2", "--convert")
    args, kw = calls["args"], calls["kwargs"]
    assert args[3] == TrainConfig(epochs=2, batch_size=4, optimizer="adam", lr=0.05, schedule="cosine",
                                  milestones=(1,), curvature_n=0, eval_n=6, seed=5,
                                  penalties=PenaltyConfig(gradreg=0.001, cure=2.0, cure_h=0.25),
                                  adversarial=AdversarialTraining("l2", 0.2, 2, None))
    assert len(args[1]) == 12 and args[1].split == "train" and args[2].split == "test"
    assert kw["convert"] is True and kw["output"] == tmp_path / "m.safetensors" and kw["checkpoint"] == "demo"
    assert kw["run_dir"] == tmp_path / "m.run" and kw["resume"] is False


def test_finetune_lcnn_weights(record, tmp_path):
    calls = record("lcnn_audit.audits.finetune.finetune")
    invoke("finetune", "demo", "--out", tmp_path / "m.safetensors", "--num-samples", "4", "--lcnn")
    assert calls["args"][3].penalties == PenaltyConfig(lambda_beta=1e-4, lambda_gamma=1e-5)
    assert len(calls["args"][1]) == 4  # --num-samples, the long form of --n, on every command


# ---------------------------------------------------------------------------- defaults = the options classes'


@pytest.mark.parametrize(("argv", "target", "expected"), [
    (["curvature", "demo"], "lcnn_audit.audits.curvature.run", CurvatureOptions()),
    (["grad-robustness", "demo"], "lcnn_audit.audits.grad_robustness.run", GradRobustnessOptions()),
    (["discrepancy", "demo"], "lcnn_audit.audits.discrepancy.run", DiscrepancyOptions()),
    (["attack", "demo"], "lcnn_audit.audits.attack.run", AttackOptions()),
    (["bound", "demo"], "lcnn_audit.audits.bound.run", BoundOptions()),
], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_defaults_are_the_options_classes(record, argv, target, expected):
    """No flag given: the command passes exactly ``OptionsClass()`` (so no CLI default restates
    a library default that could drift) and the shared defaults (batch size 128)."""
    calls = record(target)
    invoke(*argv, *(["--n", "2"] if argv[0] != "bound" else []))
    assert _options(calls) == expected
    if argv[0] != "bound":
        assert calls["kwargs"]["batch_size"] == 128


def test_convert_defaults(record, tmp_path):
    calls = record("lcnn_audit.audits.convert.convert")
    invoke("convert", "demo", "-o", tmp_path / "m.safetensors")
    assert calls["args"][1] == ConvertOptions() and calls["kwargs"]["data"] is None
    invoke("convert", "demo", "-o", tmp_path / "m.safetensors", "--data", "demo", "--num-samples", "3")
    assert len(calls["kwargs"]["data"]) == 3


def test_finetune_defaults(record, tmp_path):
    calls = record("lcnn_audit.audits.finetune.finetune")
    invoke("finetune", "demo", "--out", tmp_path / "m.safetensors", "--n", "4")
    assert calls["args"][3] == TrainConfig()


def _click_commands() -> dict:
    return typer.main.get_command(app).commands


def _field_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out.update(_field_defaults(f.default_factory))  # nested options: curvature.target -> target
    return out


def _cli_value(default):
    return ",".join(default) if isinstance(default, tuple) and all(isinstance(v, str) for v in default) else default


def _check_defaults(command: str, cls, rename: dict | None = None) -> int:
    fields_ = _field_defaults(cls)
    checked = 0
    for param in _click_commands()[command].params:
        name = (rename or {}).get(param.name, param.name)
        if name in fields_ and param.default is not None:
            assert param.default == _cli_value(fields_[name]), (command, param.name)
            checked += 1
    return checked


def test_every_cli_default_of_an_options_field_is_that_fields_default():
    """Iterating the audit registry and the convert/finetune options classes: every CLI option
    named like an options field shows that field's default."""
    commands = _click_commands()
    checked = 0
    for spec in AUDITS.values():
        assert spec.command in commands
        checked += _check_defaults(spec.command, spec.options_class, {"attack": "attacks", "norm": "norms"})
    checked += _check_defaults("convert", ConvertOptions, {"fold_bn": "fold_into_bn", "fx": "use_fx",
                                                          "power_iterations": "n_power_iterations"})
    for cls in (TrainConfig, PenaltyConfig):
        checked += _check_defaults("finetune", cls)
    checked += _check_defaults("finetune", AdversarialTraining, {"adv_eps": "eps", "adv_steps": "steps",
                                                                 "adv_step_size": "step_size"})
    assert checked >= 70


# ---------------------------------------------------------------------------- shared options


def _describe(param) -> tuple:
    kind = getattr(param, "type_descriptor", None)  # Typer >= 0.20 (its own click); else click's type
    kind = kind.annotation if kind is not None else type(param.type).__name__
    return (tuple(param.opts), tuple(param.secondary_opts), kind, getattr(param, "min", None), param.default,
            param.help, getattr(param, "rich_help_panel", None))


def test_shared_options_are_the_same_on_every_command():
    seen: dict[str, dict[str, tuple]] = {}
    for name, cmd in _click_commands().items():
        for param in cmd.params:
            flag = next((f for f in param.opts if f in SHARED), None)
            if flag and (name, flag) not in OWN:
                seen.setdefault(flag, {})[name] = _describe(param)
    assert set(seen) == set(SHARED)
    for flag, by_command in seen.items():
        assert len(set(by_command.values())) == 1, (flag, by_command)
    data_commands = {"curvature", "grad-robustness", "discrepancy", "attack", "convert", "finetune", "info"}
    for flag in ("--n", "--seed", "--batch-size", "--data-root", "--download", "--single-split", "--device"):
        assert data_commands <= set(seen[flag]), flag
    for flag in ("--json", "--csv"):
        assert {"curvature", "grad-robustness", "discrepancy", "attack", "bound", "convert", "finetune"} <= set(
            seen[flag]), flag
    assert set(_click_commands()) <= set(seen["--threads"]) and set(_click_commands()) <= set(seen["--verbose"])
    assert seen["--n"]["convert"][0] == ("--n", "--num-samples")


def test_finetune_writes_csv_per_epoch(tmp_path):
    """--csv on finetune (it had none at first): one row per epoch."""
    res = runner.invoke(app, ["finetune", "demo", "--out", str(tmp_path / "m.safetensors"), "--n", "8",
                              "--test-data", "demo", "--eval-n", "4", "--curvature-n", "0", "--epochs", "1",
                              "--batch-size", "4", "--csv", str(tmp_path / "e.csv"), "-q"])
    assert res.exit_code == 0, res.output
    rows = Path(tmp_path / "e.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and "epoch" in rows[0]


# ---------------------------------------------------------------------------- the torch-free option modules


def test_option_modules_import_no_torch():
    """The CLI reads its defaults from the options classes at start-up: they import no torch."""
    import subprocess
    import sys

    code = ("import sys; import lcnn_audit.cli.options; "
            "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_torch_free_copies_match_the_torch_modules():
    """The names the torch-free option modules hold are those the kernels use."""
    from lcnn_audit.attacks import autoattack, base, pgd, registry
    from lcnn_audit.layers import spectral
    from lcnn_audit.layers.centered_softplus import DEFAULT_BETA
    from lcnn_audit.nn_kinds import SWAPPABLE_ACTIVATIONS
    from lcnn_audit.surgery import ACTIVATION_MODULES

    assert ACTIVATION_KINDS == tuple(SWAPPABLE_ACTIVATIONS) == tuple(ACTIVATION_MODULES)
    assert ConvertOptions().beta_init == DEFAULT_BETA
    assert (ConvertOptions().tol, ConvertOptions().max_iter) == (spectral.DEFAULT_TOL, spectral.DEFAULT_MAX_ITER)
    assert base.NORMS == ("linf", "l2", "l1") and pgd.STEP_RULES == ("fixed", "apgd")
    assert "autoattack" in registry.ATTACKS and autoattack.VERSIONS[0] == "standard"
    assert set(base.NORMS) == {n for cls in registry.ATTACKS.values() for n in cls.norms}


# ---------------------------------------------------------------------------- the commands over no audit


def test_gate(record, tmp_path):
    calls = record("lcnn_audit.gates.load_policy")
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: p\n")
    invoke("gate", policy, "--no-regression", "--trust-policy", "--threads", "1")
    assert calls["args"] == (policy,) and calls["kwargs"] == {"compute": True, "regression": False, "trust": True}


def test_gate_results_mode(record, tmp_path):
    calls = record("lcnn_audit.gates.load_policy")
    policy, res = tmp_path / "policy.yaml", tmp_path / "r.json"
    policy.write_text("name: p\n")
    res.write_text("{}")
    invoke("gate", policy, "--results", res)
    assert calls["kwargs"] == {"compute": False, "regression": True, "trust": False}


def test_report(record, monkeypatch, tmp_path):
    monkeypatch.setattr("lcnn_audit.report.load_inputs", lambda inputs, labels: (["runs", *labels], ["verdicts"]))
    calls = record("lcnn_audit.report.write_report")
    out = tmp_path / "r.md"
    invoke("report", tmp_path / "a.json", "-o", out, "--label", "m1", "--title", "T", "--no-plots")
    assert calls["args"] == (["runs", "m1"], out, ["verdicts"]) and calls["kwargs"] == {"title": "T", "plots": False}


def test_demo(record, tmp_path):
    calls = record("lcnn_audit.demo.run_demo")
    invoke("demo", "-o", tmp_path / "d", "--n", "32", "-q")
    step, out = calls["args"]
    assert step.name == next(iter(AUDITS)) and out == tmp_path / "d" and calls["kwargs"]["n"] == 32
