"""Fig. 2 and histogram figures: theory lines never hidden while listed, legends outside the
axes, readable log ticks over less than a decade."""

import math

import pytest

from lcnn_audit import plots

PNG = b"\x89PNG\r\n\x1a\n"
RADII = [1e-3 * 10 ** (i / 4) for i in range(9)]


def _model(scale: float, quad: float, bound_factor: float) -> dict:
    return {"curves": [{"radius": r, "mean": 0.05 + r, "median": 0.04 + r, "p95": 0.09 + r,
                        "quadratic": quad * r, "bound": min(1e300, bound_factor * r * math.exp(min(600, r * scale)))}
                       for r in RADII]}


@pytest.fixture
def captured(monkeypatch):
    figs = []
    real = plots._save

    def keep(fig, path):
        figs.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_off_scale_theory_lines_are_marked_and_legends_sit_outside(captured, tmp_path):
    models = [("in_range", _model(1, 5, 10)), ("huge", _model(1e4, 1e9, 1e12)), ("tiny", _model(1, 1e-12, 1e-12)),
              ("fourth", _model(1, 2, 3))]
    out = plots.grad_robustness_figure(models, tmp_path / "f.png")
    assert out.read_bytes().startswith(PNG)
    fig = captured[0]
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo <= 0.04 and hi >= 0.19  # every measured value shows
    # every drawn theory line has a point inside the y-range; the others are listed as off scale
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "huge: r·E[C_f] off scale (above" in notes and "huge: rδ·exp(rδ) bound off scale (above" in notes
    assert "tiny: r·E[C_f] off scale (below" in notes
    for line in ax.get_lines():
        ys = [y for y in line.get_ydata() if not math.isnan(y)]
        if line.get_linestyle() in ("--", ":"):
            assert any(lo <= y <= hi for y in ys), line
    # two legends (models, line styles), both right of the axes, with one entry per model
    legends = [c for c in ax.get_children() if c.__class__.__name__ == "Legend"]
    assert len(legends) == 2
    texts = [[t.get_text() for t in leg.get_texts()] for leg in legends]
    assert ["in_range", "huge", "tiny", "fourth"] in texts
    assert any("off-scale theory line" in t for t in texts)
    fig.canvas.draw()
    ax_right = ax.get_window_extent().x1
    assert all(leg.get_window_extent().x0 >= ax_right for leg in legends)


def test_all_theory_lines_in_range_need_no_off_scale_entry(captured, tmp_path):
    plots.grad_robustness_figure([("a", _model(1, 5, 10))], tmp_path / "f.png")
    fig = captured[0]
    assert not fig.texts
    legends = [c for c in fig.axes[0].get_children() if c.__class__.__name__ == "Legend"]
    assert not any("off-scale" in t.get_text() for leg in legends for t in leg.get_texts())


def test_histogram_ticks_under_one_decade_do_not_overlap(captured, tmp_path):
    plots.histogram_figure([("a", [20.0, 25.0, 31.0, 40.0, 55.0, 60.0])], tmp_path / "h.png", "C_f")
    fig = captured[0]
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True) if t.get_text()
              and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len(labels) >= 3, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), [t.get_text() for t in labels]
    assert {t.get_text() for t in labels} >= {"20", "30", "40", "50"}
