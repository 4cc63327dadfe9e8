"""The report's section table (``SECTION_BUILDERS``) and the one robust-accuracy drawing the
report and ``lcnn-audit attack --plot`` share."""

from __future__ import annotations

import inspect

import pytest

from lcnn_audit import plots, report
from lcnn_audit.attacks.plot import plot_robustness
from lcnn_audit.errors import UsageError
from lcnn_audit.report import SECTION_BUILDERS, SECTIONS, Run, Section, build_report
from lcnn_audit.results import AuditResult

PNG = b"\x89PNG\r\n\x1a\n"


def _attack(acc: float, masking: bool = False, attacks=("pgd", "fgsm")) -> AuditResult:
    results = []
    for norm, eps_list in (("l2", (0.1, 0.5)), ("linf", (0.01,))):
        for eps in eps_list:
            for k, attack in enumerate((*attacks, "worst_case")):
                a = acc - eps - 0.01 * (len(attacks) - k)
                results.append({"attack": attack, "norm": norm, "eps": eps, "robust_accuracy": a, "ci_low": a - 0.05,
                                "ci_high": a + 0.05})
    return AuditResult(command="attack", config={"checkpoint": "m.pt"},
                       summary={"n": 20, "clean_accuracy": acc, "clean_ci_low": acc - 0.1, "clean_ci_high": acc,
                                "results": results, "flags": {"gradient_masking": masking}}, per_sample={})


def test_section_builders_are_the_report_order_and_share_one_signature():
    assert SECTIONS == ("curvature", "attack", "grad-robustness", "discrepancy", "bound") == tuple(SECTION_BUILDERS)
    for name, builder in SECTION_BUILDERS.items():
        assert list(inspect.signature(builder).parameters) == ["runs", "plots"], name
        assert getattr(report, builder.__name__) is builder  # public, re-exported by lcnn_audit.report


def test_build_report_reads_the_section_table(monkeypatch):
    """A new entry in SECTION_BUILDERS is all a new result command needs to get a section."""
    seen = []

    def novel(runs, plots):
        seen.append(([r.label for r in runs], plots))
        return Section("Novel", "novel", ["a paragraph"])

    monkeypatch.setitem(SECTION_BUILDERS, "novel", novel)
    runs = [Run("m", "m.json", AuditResult(command="novel", config={}, summary={}, per_sample={}))]
    sections = build_report(runs, plots=False)
    assert [s.anchor for s in sections] == ["inputs", "novel"] and seen == [(["m"], False)]
    inputs = sections[0]
    assert not any("No section for the command" in b for b in inputs.blocks if isinstance(b, str))


def test_attack_section_draws_the_comparison_and_one_figure_per_model():
    runs = [Run("a", "a.json", _attack(0.9)), Run("b", "b.json", _attack(0.8, masking=True))]
    section = report.attack_section(runs, True)
    figs = [b for b in section.blocks if isinstance(b, report.Figure)]
    assert [f.name for f in figs] == ["robust_compare", "robust_0", "robust_1"]
    assert all(f.png.startswith(PNG) for f in figs)


@pytest.fixture
def drawn(monkeypatch):
    """Every matplotlib Figure saved while the test runs."""
    from matplotlib.figure import Figure

    figs = []
    real_savefig = Figure.savefig

    def savefig(self, *a, **kw):
        figs.append(self)
        return real_savefig(self, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def test_one_drawing_for_the_cli_plot_and_the_report(tmp_path, drawn):
    res = _attack(0.9, masking=True)
    a = plot_robustness(res, tmp_path / "a.png")
    b = plots.robustness_figure(res.summary, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes().startswith(PNG)
    fig = drawn[0]
    assert [ax.get_title() for ax in fig.axes] == ["l2: robust accuracy vs eps (n = 20)",
                                                   "linf: robust accuracy vs eps (n = 20)"]
    assert fig._suptitle.get_text() == "warning: possible gradient masking (see flags)"
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["pgd", "fgsm", "worst case"]
    worst = ax.get_lines()[2]
    assert worst.get_color() == "black" and list(worst.get_xdata()) == [0.0, 0.1, 0.5]
    assert list(worst.get_ydata()) == pytest.approx([0.9, 0.9 - 0.1, 0.9 - 0.5])
    with pytest.raises(UsageError, match="no robust accuracies"):
        plots.robustness_figure({"results": []}, tmp_path / "c.png")


def test_comparison_draws_each_models_worst_case(tmp_path, drawn):
    models = [("a", _attack(0.9).summary), ("b", _attack(0.7).summary),
              ("no linf", {**_attack(0.6).summary, "results": [e for e in _attack(0.6).summary["results"]
                                                               if e["norm"] == "l2"]})]
    plots.robust_comparison_figure(models, tmp_path / "c.png")
    fig = drawn[0]
    l2, linf = fig.axes
    assert [line.get_label() for line in l2.get_lines()] == ["a", "b", "no linf"]
    assert [line.get_label() for line in linf.get_lines()] == ["a", "b"]  # a model without the norm is left out
    assert [line.get_color() for line in l2.get_lines()] == ["C0", "C1", "C2"]
    assert list(l2.get_lines()[1].get_ydata()) == pytest.approx([0.7, 0.7 - 0.1, 0.7 - 0.5])
    assert l2.get_ylabel() == "robust accuracy (worst case)"
    assert l2.get_title() == "l2: models compared (band: 95% interval)"
