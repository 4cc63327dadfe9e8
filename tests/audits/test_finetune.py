"""The finetune and convert command flows as library calls (lcnn_audit.audits): Python and
the CLI run the same training, with the same learning-rate rule and --lcnn defaults."""

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from lcnn_audit.audits.convert import check_model_path
from lcnn_audit.audits.convert import convert as convert_command
from lcnn_audit.audits.finetune import (
    PAPER_LAMBDA_BETA,
    PAPER_LAMBDA_GAMMA,
    FromScratch,
    finetune,
    lcnn_penalty_weights,
    prepare_model,
)
from lcnn_audit.cli import app
from lcnn_audit.convert import ConvertOptions
from lcnn_audit.data import load_data
from lcnn_audit.errors import UsageError
from lcnn_audit.loading import load_model
from lcnn_audit.options import OptionsError
from lcnn_audit.training import LOG_NAME, TrainConfig, train

runner = CliRunner()
ARCH = {"width": 2, "act": "softplus", "beta": 5.0}
COMMON = ["--n", "16", "--eval-n", "8", "--curvature-n", "0", "--batch-size", "8"]


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def python_config(**kw):
    return TrainConfig(**{**dict(batch_size=8, eval_n=8, curvature_n=0), **kw})


@pytest.fixture(scope="module")
def splits():
    return load_data("demo", "train", n=16, seed=0), load_data("demo", "test")


def test_python_and_cli_fine_tune_at_the_same_rate(splits, tmp_path):
    """Before, TrainConfig() meant lr 0.1 in Python while the CLI fine-tuned at 0.01."""
    tr, te = splits
    cli("finetune", "demo", *COMMON, "--epochs", "1", "-o", tmp_path / "cli.safetensors")
    log = json.loads((tmp_path / "cli.run" / LOG_NAME).read_text())
    assert log["config"]["train"]["lr"] == 0.01
    res = finetune(load_model("demo"), tr, te, python_config(epochs=1), checkpoint="demo",
                   output=tmp_path / "py.safetensors", run_dir=tmp_path / "py.run")
    assert res.config == log["config"]  # the same run: options, data, recipe, source
    assert res.summary["epochs"][0]["lr"] == log["summary"]["epochs"][0]["lr"] == 0.01
    assert train(load_model("demo"), tr, te, python_config(epochs=0)).config["train"]["lr"] == 0.01
    x = te.get(torch.arange(4)).x
    with torch.no_grad():  # and the same weights
        assert torch.equal(load_model(tmp_path / "py.safetensors")(x), load_model(tmp_path / "cli.safetensors")(x))


def test_python_and_cli_train_from_scratch_at_the_paper_rate(splits, tmp_path):
    tr, te = splits
    cli("finetune", "--from-scratch", "--convert", "--lcnn", "--arch", "small_cnn", "--arch-kwargs",
        "width=2,act=softplus,beta=5", *COMMON, "--epochs", "0", "-o", tmp_path / "cli.safetensors")
    log = json.loads((tmp_path / "cli.run" / LOG_NAME).read_text())
    weights = lcnn_penalty_weights(lcnn=True)
    assert weights == (PAPER_LAMBDA_BETA, PAPER_LAMBDA_GAMMA) == (1e-4, 1e-5)
    from lcnn_audit.penalties import PenaltyConfig

    cfg = python_config(epochs=0, penalties=PenaltyConfig(*weights))
    res = finetune(FromScratch("small_cnn", ARCH, dataset="demo"), tr, te, cfg, convert=True,
                   run_dir=tmp_path / "py.run")
    assert res.config["train"]["lr"] == log["config"]["train"]["lr"] == 0.1
    assert res.config == log["config"]


def test_lcnn_weights_and_prepare_model():
    assert lcnn_penalty_weights() == (0.0, 0.0)
    assert lcnn_penalty_weights(lambda_beta=1e-3) == (1e-3, 1e-5)
    assert lcnn_penalty_weights(True, lambda_gamma=0.0) == (1e-4, 0.0)
    model, report = prepare_model(load_model("demo"), (1, 28, 28), convert=True)
    assert report is not None and report.counts()["activation"] == 4 and model.recipe["convert"]
    with pytest.raises(UsageError, match="x.safetensors is already LCNN-converted; drop --convert"):
        prepare_model(model, (1, 28, 28), convert=True, name="x.safetensors")
    same, none = prepare_model(model, (1, 28, 28))
    assert same is model and none is None


def test_ready_callback_sees_the_converted_model(splits, tmp_path):
    tr, te = splits
    seen = []
    finetune(load_model("demo"), tr, None, python_config(epochs=0), convert=True,
             on_ready=lambda m, r: seen.append((m.recipe["convert"] is not None, r.counts())))
    assert seen == [(True, {"activation": 4, "conv": 4, "linear": 1, "batchnorm": 4})]
    with pytest.raises(UsageError, match="models are written as safetensors"):
        finetune(load_model("demo"), tr, None, python_config(epochs=0), output=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_finetune_csv_and_num_samples(tmp_path):
    out, table = tmp_path / "m.safetensors", tmp_path / "epochs.csv"
    cli("finetune", "demo", "--num-samples", "16", "--eval-n", "8", "--curvature-n", "0", "--batch-size", "8",
        "--epochs", "2", "--gradreg", "1e-3", "-o", out, "--csv", table)
    rows = list(csv.DictReader(table.open()))
    log = json.loads((tmp_path / "m.run" / LOG_NAME).read_text())
    assert [int(r["epoch"]) for r in rows] == [1, 2] and log["config"]["data"]["n"] == 16
    for row, rec in zip(rows, log["summary"]["epochs"], strict=True):
        assert float(row["train_loss"]) == rec["train_loss"]
        assert float(row["penalties.gradreg"]) == rec["penalties"]["gradreg"]


def test_convert_command_checks_output_first_and_takes_num_samples(tmp_path):
    with pytest.raises(UsageError, match="name the file m.safetensors"):
        convert_command(load_model("demo"), output=tmp_path / "m.pt", input_shape=(1, 28, 28))
    with pytest.raises(OptionsError) as err:
        convert_command(load_model("demo"), ConvertOptions(tol=2, max_iter=0), input_shape=(1, 28, 28))
    assert [p.field for p in err.value.problems] == ["tol", "max_iter"]
    assert err.value.render() == "tol must lie in (0, 1), got 2; max_iter must be >= 1, got 0"
    check_model_path(tmp_path / "ok.safetensors")
    out = tmp_path / "c.safetensors"
    res = cli("convert", "demo", "--data", "demo", "--num-samples", "8", "-o", out, "--json", tmp_path / "c.json")
    assert "clean accuracy" in res.output and load_model(out).recipe["convert"]
    assert json.loads((tmp_path / "c.json").read_text())["config"]["data"]["n"] == 8


def test_option_problems_name_the_commands_flags(tmp_path):
    out = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["finetune", "demo", "-o", str(out), "--lr", "0", "--momentum", "1", "--adv-train",
                              "l1", "--adv-steps", "0", "--cure-h-warmup", "-1", "--optimizer", "lbfgs"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in text, res.output
    for part in ("training config: 6 problem(s):", "--optimizer is 'lbfgs', an unknown optimizer",
                 "--lr must be > 0, got 0.0", "--momentum must lie in [0, 1), got 1.0",
                 "--cure-h-warmup must be a finite number >= 0", "--adv-train is 'l1', an unknown adversarial norm",
                 "--adv-steps must be >= 1"):
        assert part in text, text
    res = runner.invoke(app, ["convert", "demo", "-o", str(out), "--input-shape", "1,28,28", "--kinds", "tanh",
                              "--gamma-init", "0.5"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "--kinds has unknown activation kind(s) ['tanh']" in text, text
    assert "--gamma-init must be a number > 1" in text and not out.exists()
