"""``lcnn-audit report``: side-by-side tables and plots, self-contained HTML that renders in a
real headless browser, Markdown with its images beside it."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lcnn_audit.report import Run, Table, build_report, load_inputs, render_html, render_markdown
from lcnn_audit.results import AuditResult
from tests.gate_helpers import demo_run, invoke

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report_render.py"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    return demo_run(tmp_path_factory)


@pytest.fixture(scope="session")
def two_models(run, tmp_path_factory):
    """The demo results, plus a copy relabelled as a second model with halved curvature."""
    d = tmp_path_factory.mktemp("second-model")
    for f in run["results"].glob("*.json"):
        r = json.loads(f.read_text())
        r["config"]["checkpoint"] = "models/smooth.safetensors"
        if r["command"] == "curvature":
            r["summary"]["curvature"]["mean"] /= 2
            r["per_sample"]["curvature"] = [v / 2 for v in r["per_sample"]["curvature"]]
        (d / f.name).write_text(json.dumps(r))
    return sorted(run["results"].glob("*.json")) + sorted(d.glob("*.json"))


@pytest.fixture(scope="session")
def html_report(two_models, run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = invoke("report", *two_models, run["verdict"], "-o", out)
    assert res.exit_code == 0, res.output
    return out


def test_html_is_self_contained(html_report):
    text = html_report.read_text()
    assert "<script" not in text.lower()
    assert not re.search(r'(?:src|href)\s*=\s*"(?!data:|#)', text), "remote or relative reference"
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # 3 curvature histograms, models compared + one robust-accuracy plot per model, gradient robustness
    assert len(images) == 7
    assert all(base64.b64decode(i).startswith(PNG) for i in images)


def test_tables_put_models_side_by_side(html_report):
    text = html_report.read_text()
    for title in ("Curvature (Table 1)", "Adversarial robustness (Table 2)", "Gradient robustness (Fig. 2)",
                  "Train-test discrepancy (Table 3)", "Data-free bound (Theorem 1)", "lcnn-audit gate: demo-tiny"):
        assert title in text
    for header in ("E‖∇f‖₂", "E‖∇²f‖₂", "E C_f", "‖ε‖₂ = 0.1", "‖ε‖₂ = 0.5", "Δtt E C_f", "Lipschitz L"):
        assert f">{header}</th>" in text
    # each table of a model section has one row per model
    assert text.count("<td class=\"l\">demo</td>") >= 7 and text.count("<td class=\"l\">smooth</td>") >= 7


def test_report_rows_hold_the_result_numbers(run):
    runs, _ = load_inputs(sorted(run["results"].glob("*.json")))
    sections = {s.anchor: s for s in build_report(runs, plots=False)}
    curv = next(r for r in runs if r.result.command == "curvature").result.summary
    table1 = sections["curvature"].blocks[0]
    assert isinstance(table1, Table) and table1.rows[0][0] == "demo [1]"  # [1]: the ReLU notice
    assert table1.rows[0][4].startswith(f"{curv['curvature']['mean']:.4g} ± ")
    att = next(r for r in runs if r.result.command == "attack").result.summary
    wc = next(e for e in att["results"] if e["attack"] == "worst_case" and e["eps"] == 0.1)
    table2 = sections["attack"].blocks[0]
    assert table2.header[3] == "‖ε‖₂ = 0.1"
    lo, hi = 100 * wc["ci_low"], 100 * wc["ci_high"]
    assert table2.rows[0][3] == f"{100 * wc['robust_accuracy']:.2f} [{lo:.1f}, {hi:.1f}]"


def test_markdown_report_links_its_images(two_models, tmp_path):
    out = tmp_path / "report.md"
    res = invoke("report", *two_models, "-o", out, "--title", "Models compared")
    assert res.exit_code == 0, res.output
    md = out.read_text()
    assert md.startswith("# Models compared")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 7 and all(link.startswith("report_files/") for link in links)
    assert all((tmp_path / link).read_bytes().startswith(PNG) for link in links)
    assert "| model | n | E‖∇f‖₂ | E‖∇²f‖₂ | E C_f | accuracy (%) | method | not converged |" in md


def test_no_plots_and_labels(run, tmp_path):
    files = [run["results"] / "curvature.json", run["results"] / "curvature.json"]
    res = invoke("report", *files, "-o", tmp_path / "r.html", "--no-plots", "--label", "base", "--label", "new")
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r.html").read_text()
    assert "data:image/png" not in text and ">base</td>" in text and ">new</td>" in text


def test_same_checkpoint_twice_is_told_apart_by_file_name(run, tmp_path):
    shutil.copy(run["results"] / "curvature.json", tmp_path / "retrained.json")
    runs, _ = load_inputs([run["results"] / "curvature.json", tmp_path / "retrained.json"])
    assert [r.label for r in runs] == ["demo (curvature)", "demo (retrained)"]


def test_report_usage_errors_exit_2(run, tmp_path):
    res = invoke("report", run["results"] / "curvature.json", "-o", tmp_path / "r.pdf")
    assert res.exit_code == 2 and "use .html or .md" in res.output
    res = invoke("report", tmp_path / "missing.json", "-o", tmp_path / "r.html")
    assert res.exit_code == 2 and "report input not found" in res.output
    res = invoke("report", run["results"] / "curvature.json", "-o", tmp_path / "r.html", "--label", "a",
                 "--label", "b")
    assert res.exit_code == 2 and "--label was given 2 time(s) for 1 result file(s)" in res.output
    (tmp_path / "x.json").write_text("{}")
    res = invoke("report", tmp_path / "x.json", "-o", tmp_path / "r.html")
    assert res.exit_code == 2 and "not an lcnn-audit result" in res.output
    assert not (tmp_path / "r.html").exists()


def test_other_commands_are_listed_and_text_is_escaped(tmp_path):
    r = AuditResult(command="convert", config={"checkpoint": "<b>x</b>.pt"}, summary={})
    sections = build_report([Run("<b>x</b>", "x.json", r)], plots=False)
    html = render_html(sections, title="a < b")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html and "<title>a &lt; b</title>" in html
    assert "No section for the command(s) convert" in html
    md = render_markdown([sections[0]])
    assert "| model | command |" in md


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(html_report, tmp_path):
    shot = tmp_path / "report.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(html_report), "--png", str(shot), "--height", "3000"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    assert found["ok"] and found["embedded_images"] == 7 and found["plot_colour_pixels"] > 200
    assert shot.read_bytes().startswith(PNG)
