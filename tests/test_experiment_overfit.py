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


def _geo(d_train):
    """A cached geometry audit whose Δtt/train values are d_train (gradient, Hessian, curvature)."""
    boot = {g: {"train": [v] * 4, "test": [v / (1 + v)] * 4, "test_mean": [1.0] * 4}
            for g, v in zip(("grad_norm", "hessian_norm", "curvature"), d_train, strict=True)}
    return {"delta_tt_train": dict(zip(("grad_norm", "hessian_norm", "curvature"), d_train, strict=True)),
            "delta_tt": {g: v / (1 + v) for g, v in zip(("grad_norm", "hessian_norm", "curvature"), d_train,
                                                        strict=True)}, "boot": boot}


def test_table3_verdict_on_the_papers_own_numbers():
    """The criterion accepts the paper's printed Table 3 (its weakest row sets the 71× bar) and
    rejects a curvature discrepancy as large as the gradient's."""
    exp = load_experiment()
    args = exp.parse_args(["--seeds", "0", "--epochs", "60", "--data", "demo"])
    R = {"geometry": {(k, 0, 60, "loss"): _geo(v) for k, v in exp.PAPER_TABLE3.items()}}
    verdicts, _ = exp.verdict_table3(R, args)
    assert "— holds here (4 of 4 models)" in verdicts[0]
    assert "— holds here (4 of 4 models reach" in verdicts[1]
    R = {"geometry": {(k, 0, 60, "loss"): _geo((10.0, 10.0, 1.0)) for k in exp.PAPER_TABLE3}}
    assert "does not hold here (0 of 4" in exp.verdict_table3(R, args)[0][1]


def test_fashion_mnist_table2_claim_uses_paper_range_and_intervals():
    spec = importlib.util.spec_from_file_location("fashion_mnist_experiment", ROOT / "experiments" / "fashion_mnist.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)

    def res(name, curv, robust):
        d = {"grad_norm": 0.1, "hessian_norm": 0.1, "curvature": 0.01}
        return {"name": name, "label": name, "accuracy": 0.9, "test": {"curvature": curv}, "delta_tt": d,
                "delta_tt_train": d, "robust": robust, "audit_n": 500, "history": []}

    far = {"0.05": 0.88, "0.1": 0.83, "0.2": 0.726, "1": 0.0}
    at = {"0.05": 0.886, "0.1": 0.87, "0.2": 0.822, "1": 0.9}  # ε = 1 is outside the paper's range: ignored
    text = "\n".join(mod.claims({"standard": res("standard", 50, far), "lcnn": res("lcnn", 10, far),
                                 "lcnn_gradreg": res("lcnn_gradreg", 5, far), "pgd_at": res("pgd_at", 20, at)}))
    assert "on par with adversarial training** — does not hold" in text  # ε = 0.2: 9.6 points, disjoint
    assert "; 1: " not in text and "0.2: +9.6" in text
    near = dict(at, **{"0.2": 0.80})
    text = "\n".join(mod.claims({"standard": res("standard", 50, far), "lcnn": res("lcnn", 10, far),
                                 "lcnn_gradreg": res("lcnn_gradreg", 5, {**far, "0.2": 0.77, "0.1": 0.86}),
                                 "pgd_at": res("pgd_at", 20, near)}))
    assert "on par with adversarial training** — inconclusive" in text  # gaps > 2.3 but intervals overlap
