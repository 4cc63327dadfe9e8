"""The report shows every notice and flag beside the numbers it qualifies (issue 16)."""

import re

import pytest

from lcnn_audit.report import Footnotes, build_report, load_inputs, render_html, run_notes
from tests.gate_helpers import demo_run


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    runs, _ = load_inputs(sorted(demo_run(tmp_path_factory)["results"].glob("*.json")))
    return runs, {s.anchor: s for s in build_report(runs, plots=False)}


def _notes_of(section) -> list[str]:
    return next(b for b in section.blocks if isinstance(b, list))


@pytest.mark.parametrize("anchor, expected", [
    ("curvature", ["uses ReLU"]),
    ("grad-robustness", ["uses ReLU", "uses max-pooling"]),
    ("discrepancy", ["uses ReLU"]),
    ("bound", ["has kinks"]),
])
def test_every_section_lists_its_notices_beside_the_model(sections, anchor, expected):
    runs, secs = sections
    sec = secs[anchor]
    first = sec.blocks[0]
    marker = re.fullmatch(r"demo \[([0-9, ]+)\]", first.rows[0][0])
    assert marker, first.rows[0][0]
    notes = _notes_of(sec)
    cited = [notes[int(k) - 1] for k in marker.group(1).split(", ")]
    for text in expected:
        assert any(text in n for n in cited), (anchor, text, notes)


def test_every_result_notice_reaches_the_report(sections):
    runs, secs = sections
    html = render_html(list(secs.values()))
    for r in runs:
        for note in run_notes(r.result):
            assert note.replace("'", "&#x27;") in html, note


def test_footnotes_number_distinct_notes_once():
    f = Footnotes()
    assert f.mark("a", ["x", "y", "x"]) == "a [1, 2]"
    assert f.mark("b", ["x"]) == "b [3]" and f.mark("a", ["y"]) == "a [2]" and f.mark("c", []) == "c"
    assert f.block()[1] == ["[1] a: x", "[2] a: y", "[3] b: x"]
