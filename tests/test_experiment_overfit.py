"""``experiments/overfit.py`` end to end in miniature (issue #15), so it cannot rot: the bundled
sample, 200 training images, 1 epoch, 1 seed, 2 models, every phase, then a resumed rerun."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_experiment():
    spec = importlib.util.spec_from_file_location("overfit_experiment", ROOT / "experiments" / "overfit.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_overfit_experiment_miniature(tmp_path):
    exp = load_experiment()
    out, doc = tmp_path / "run", tmp_path / "doc" / "overfit.md"
    argv = ["--out", str(out), "--doc", str(doc), "--data", "demo", "--n-train", "200", "--n-test", "24",
            "--n-train-audit", "24", "--epochs", "1", "--checkpoints", "1", "--seeds", "0",
            "--models", "standard,lcnn", "--attack-n", "16", "--pgd-steps", "2", "--pgd-restarts", "1",
            "--aa-n", "0", "--robustness-n", "8", "--bootstrap", "50", "--timing-steps", "2", "--no-demo"]
    assert exp.main(argv) == 0
    text = doc.read_text()
    for heading in ("## Criteria (fixed before the run)", "## Table 3", "## Control: f = the label's logit",
                    "## Table 1 at epoch 1", "## Table 2", "## Figure 2", "## Training time", "## Do the paper's"):
        assert heading in text, heading
    assert (doc.parent / "overfit-grad-robustness.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["table1"]) == {"standard", "lcnn"}
    assert summary["criteria"]["table3_curvature"].startswith("Table 3 caption")
    assert any("Δtt of curvature" in v for v in summary["verdicts"])
    audit = json.loads((out / "audit" / "standard-s0-e001-loss.json").read_text())
    tr, te = audit["train"]["grad_norm"], audit["test"]["grad_norm"]
    assert audit["delta_tt_train"]["grad_norm"] == pytest.approx(abs(te - tr) / tr)
    assert audit["delta_tt"]["grad_norm"] == pytest.approx(abs(te - tr) / te)
    assert len(audit["boot"]["curvature"]["train"]) == 50
    assert (out / "audit" / "lcnn-s0-e001-logit.json").exists()
    # resume: a rerun finds every phase cached and writes the same verdicts
    mtime = (out / "attack" / "lcnn-s0.json").stat().st_mtime
    assert exp.main(argv) == 0
    assert (out / "attack" / "lcnn-s0.json").stat().st_mtime == mtime
    assert json.loads((out / "summary.json").read_text())["verdicts"] == summary["verdicts"]
