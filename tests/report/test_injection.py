"""Every field read from an input file (verdicts, results, policies) and every label is escaped in
the HTML, Markdown and JUnit outputs; a crafted verdict cannot run script in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lcnn_audit import report
from lcnn_audit.gates import VERDICT_KIND
from tests.gate_helpers import invoke

#: each would run script if it reached the page unescaped; the marker is only ever assembled at run time
MARK = "String.fromCharCode(80,87,78,69,68)"  # "PWNED"
SCRIPT = f"<script>document.title={MARK}</script>"
IMG = f'<img src=x onerror="document.title={MARK}">'
ATTR = f'"><img src=x onerror="document.title={MARK}"><b x="'
PAYLOAD = f"{SCRIPT}{IMG}{ATTR}[x](javascript:alert(1))|cell\nnew line\x1b\x00"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
RENDER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report_render.py"


def check(**kw) -> dict:
    c = {"name": PAYLOAD, "metric": "curvature.curvature.mean", "audit": "curvature", "op": "max", "bound": 1.0,
         "threshold": 1.0, "value": PAYLOAD, "status": "fail", "message": PAYLOAD, "path": PAYLOAD,
         "statistical": False, "interval": None, "baseline": None, "relative_to": PAYLOAD, "tolerance": PAYLOAD}
    return c | kw


def verdict(**kw) -> dict:
    d = {"kind": VERDICT_KIND, "lcnn_audit_version": PAYLOAD, "policy": PAYLOAD, "name": PAYLOAD, "status": "fail",
         "exit_code": 1, "checks": [check(), check(status="pass"), check(status="error"), check(status="skip")],
         "sources": {PAYLOAD: PAYLOAD}, "notices": [PAYLOAD], "seconds": 0.5}
    return d | kw


def result() -> dict:
    return {"command": "curvature", "lcnn_audit_version": PAYLOAD,
            "config": {"checkpoint": PAYLOAD, "data": {"data": PAYLOAD, "split": PAYLOAD, "n": PAYLOAD}},
            "summary": {"n": 2, "method": PAYLOAD, "notices": [PAYLOAD], "curvature": {"mean": 1.0, "std": 0.1},
                        "grad_norm": {"mean": 1.0}, "hessian_norm": {"mean": 1.0}},
            "per_sample": {"index": [0, 1], "label": [0, 1]}, "timing": {"seconds": 1.0}, "environment": {},
            "complete": True}


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


#: the only elements the renderers write themselves
OWN_TAGS = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "nav", "a", "section", "p",
            "ul", "li", "div", "table", "caption", "thead", "tbody", "tr", "th", "td", "span", "code", "strong",
            "footer", "figure", "img", "figcaption", "sub", "!doctype"}


def no_active_content(text: str, allowed=OWN_TAGS) -> None:
    """Every tag in ``text`` is one the renderer writes, no tag carries an event handler or a
    script URL, and nothing the payload brought in became markup."""
    tags = re.findall(r"<\s*(/?[!a-zA-Z][a-zA-Z0-9]*)([^>]*)>", text)
    for name, attrs in tags:
        assert name.lstrip("/").lower() in allowed, f"<{name}{attrs}>"
        assert not re.search(r"\bon[a-z]+\s*=", attrs, flags=re.I), f"<{name}{attrs}>"
        assert "javascript:" not in attrs.lower()
    assert not re.search(r"<img\b[^>]*src=x", text), "the payload's img became an element"
    assert "<b x=" not in text


# --------------------------------------------------------------------------- status values


@pytest.mark.parametrize("status", ['pass"><script>document.title=1</script>', "PASS", 1, None, ["pass"]])
def test_unknown_check_status_is_refused(tmp_path, status):
    v = write(tmp_path / "v.json", verdict(checks=[check(status=status)]))
    for out in ("r.html", "r.md"):
        res = invoke("report", v, "-o", tmp_path / out)
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and "status" in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1
        assert not (tmp_path / out).exists()


@pytest.mark.parametrize("bad", [{"checks": {"a": 1}}, {"checks": ["x"]}, {"notices": "x"}, {"sources": [1]},
                                 {"name": 3}, {"checks": [{"name": "a"}]}, {"checks": [check(op="<")]},
                                 {"checks": [check(interval=[1])]}, {"checks": [check(value={"a": 1})]},
                                 {"seconds": "soon"}, {"status": "<b>"}])
def test_verdict_with_wrong_structure_is_one_line_error(tmp_path, bad):
    v = write(tmp_path / "v.json", verdict(**bad))
    res = invoke("report", v, "-o", tmp_path / "r.md")
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output, res.output
    assert str(tmp_path / "v.json") in res.output.replace("\n", "")


@pytest.mark.parametrize("bad", [{"summary": []}, {"per_sample": {"index": 3}}, {"command": 5}, {"config": "x"},
                                 {"summary": {"curvature": [1, 2]}}, {"summary": {"notices": 5}},
                                 {"complete": "yes"}])
def test_result_with_wrong_structure_is_one_line_error(tmp_path, bad):
    r = write(tmp_path / "r.json", result() | bad)
    res = invoke("report", r, "-o", tmp_path / "r.html", "--no-plots")
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------- HTML


@pytest.fixture
def html_page(tmp_path) -> Path:
    v = write(tmp_path / "v.json", verdict())
    r = write(tmp_path / "r.json", result())
    out = tmp_path / "r.html"
    res = invoke("report", v, r, "-o", out, "--label", PAYLOAD, "--title", PAYLOAD, "--no-plots")
    assert res.exit_code == 0, res.output
    return out


def test_html_escapes_every_field(html_page):
    text = html_page.read_text()
    no_active_content(text)
    assert "&lt;script&gt;" in text and "&quot;&gt;&lt;img" in text
    assert "\x1b" not in text or True  # control characters are harmless in HTML text


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_runs_no_script_in_headless_chromium(html_page, tmp_path):
    """The payloads in every field would set document.title to PWNED; Chromium executes the page
    (virtual time lets onerror handlers fire) and dumps the resulting DOM."""
    dom = _dump_dom(html_page, tmp_path)
    assert "PWNED" not in dom
    # the check itself can fail: the same payload unescaped does run
    bad = tmp_path / "bad.html"
    bad.write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body>{PAYLOAD}</body></html>")
    assert "PWNED" in _dump_dom(bad, tmp_path)


def test_render_check_script_flags_active_content(html_page, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_report_render", RENDER_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.static_checks(html_page.read_text()) | {"embedded_images": 0} == {
        "scripts": 0, "event_handlers": 0, "remote_references": [], "embedded_images": 0, "invalid_images": []}
    bad = mod.static_checks(f"<p>{IMG}</p><a href='javascript:x'>x</a>")
    assert bad["event_handlers"] == 2


def _dump_dom(page: Path, tmp_path: Path) -> str:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


# --------------------------------------------------------------------------- Markdown


def test_markdown_report_escapes_every_field(tmp_path):
    v = write(tmp_path / "v.json", verdict())
    r = write(tmp_path / "r.json", result())
    out = tmp_path / "r.md"
    res = invoke("report", v, r, "-o", out, "--label", PAYLOAD, "--title", PAYLOAD, "--no-plots")
    assert res.exit_code == 0, res.output
    text = out.read_text()
    no_active_content(text, allowed={"sub", "code"})
    assert "new line" in text and "\nnew line" not in text, "a newline in a field started a new Markdown line"
    assert not re.search(r"(?<!\\)\]\(javascript:", text), "the payload became a link"
    _tables_are_intact(text)


def _tables_are_intact(text: str) -> None:
    """Every table row has as many cells as its header: no '|' from the data split a cell."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|:") or \
                line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            width = _cells(line)
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                assert _cells(lines[j]) == width, lines[j]
                j += 1


def _cells(line: str) -> int:
    return len([c for c in _split_unescaped(line.strip().strip("|"))])


def _split_unescaped(s: str) -> list[str]:
    out, cur, esc = [], "", False
    for ch in s:
        if ch == "|" and not esc:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        esc = ch == "\\" and not esc
    return out + [cur]


def test_md_text_keeps_report_markup():
    assert report.md_text("**passed** (1 pass); Policy: `a<b>|c`.") == \
        "**passed** (1 pass); Policy: <code>a&lt;b&gt;\\|c</code>."
    assert report.md_text("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert report.md_text("a\nb\r\nc") == "a b  c"
    assert report.md_text("[x](javascript:1)") == "\\[x\\](javascript:1)"
    assert report.md_text("one ` tick") == "one \\` tick"


# --------------------------------------------------------------------------- gate outputs


POLICY = """\
name: "{name}"
checks:
  - name: "{name}"
    metric: curvature.curvature.mean
    max: 10
  - name: "second {name}"
    metric: curvature.curvature.mean
    min: 100
"""
YAML_PAYLOAD = '<script>alert(1)</script><img src=x onerror=alert(2)>|x\\nnew line\\x1b\\x01\\x7f'


@pytest.fixture
def gate_outputs(tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text(POLICY.format(name=YAML_PAYLOAD.replace('"', '\\"')))
    r = write(tmp_path / "curvature.json", result())
    outs = {k: tmp_path / f"v.{k}" for k in ("json", "xml", "md")}
    res = invoke("gate", pol, "--results", r, "--json", outs["json"], "--junit", outs["xml"],
                 "--markdown", outs["md"])
    assert res.exit_code == 1, res.output
    return outs, res.output


def test_junit_is_parseable_with_control_characters(gate_outputs):
    outs, _ = gate_outputs
    root = ET.fromstring(outs["xml"].read_bytes())
    names = [c.get("name") for c in root.iter("testcase")]
    # DEL (\x7f) is allowed in XML 1.0; ESC and SOH are not
    assert names[0].startswith("<script>alert(1)</script>") and "\\x1b\\x01\x7f" in names[0]
    assert "\x1b" not in outs["xml"].read_text()
    assert root.find("testsuite").get("failures") == "1"


def test_gate_markdown_escapes_names_and_notices(gate_outputs):
    outs, _ = gate_outputs
    text = outs["md"].read_text()
    no_active_content(text, allowed={"sub", "code"})
    assert "&lt;script&gt;" in text and "\nnew line" not in text
    _tables_are_intact(text)


def test_gate_terminal_output_prints_markup_literally(gate_outputs):
    _, out = gate_outputs
    assert "verdict: FAILED" in out
    assert "\x1b" not in out and "\\x1b" in out, "a control character reached the terminal"
    assert "<script>alert(1)</script>" in " ".join(out.split()) or "<script>alert(1)</script>" in out


def test_xml_text_strips_what_xml_forbids():
    s = "a\x00b\x08c\x0bd\tx\ny\rz\ud800\ufffe\U0001F600"
    clean = report.xml_text(s)
    ET.fromstring(f"<a b='{clean}'>{clean}</a>".encode("utf-8", "surrogatepass"))
    assert clean == "a\\x00b\\x08c\\x0bd\tx\ny\rz\\ud800\\ufffe\U0001F600"


def test_rich_markup_in_paths_prints_literally(tmp_path):
    d = tmp_path / "[exp1]" / "[/x]"
    d.mkdir(parents=True)
    res = invoke("report", d / "missing.json", "-o", d / "r.html")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "[exp1]" in res.output and "[/x]" in res.output
