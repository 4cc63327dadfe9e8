"""Reports: audit results side by side, and gate verdicts, rendered (never computed).

* :func:`build_report` (:mod:`.sections`) turns result files (and gate verdicts) into
  sections: tables in the style of the LCNN paper's Tables 1-3 with one row per model, and
  figures (curvature histograms, gradient-robustness curves, robust accuracy against eps)
  drawn by :mod:`lcnn_audit.plots`; :data:`SECTION_BUILDERS` maps each result command to its
  section's builder;
* :func:`render_html` (:mod:`.html`) writes one self-contained page (inline CSS, images as
  base64 data URIs, no scripts, no network) and :func:`render_markdown` (:mod:`.markdown`)
  GitHub-flavoured Markdown with the images beside it; :func:`write_report` (:mod:`.write`)
  picks one by the file's extension;
* :func:`verdict_markdown` (for ``$GITHUB_STEP_SUMMARY``) and :func:`verdict_junit`
  (:mod:`.junit`, one testcase per check) render a :class:`~lcnn_audit.gates.Verdict`.

The document model (:class:`Run`, :class:`Section`, :class:`Table`, :class:`Figure`,
:class:`Badge`, :class:`Footnotes`) is in :mod:`.document`, the inputs in :mod:`.inputs`.
"""

from .document import STATUS_MARK, Badge, Figure, Footnotes, Run, Section, Table, eps_label, pct, run_notes
from .html import CSS, render_html
from .inputs import as_runs, load_inputs
from .junit import verdict_junit, xml_text
from .markdown import md_text, render_markdown, verdict_markdown
from .sections import (
    SECTION_BUILDERS,
    SECTIONS,
    attack_section,
    bound_section,
    bound_text,
    build_report,
    curvature_section,
    discrepancy_section,
    grad_robustness_section,
    value_text,
    verdict_section,
)
from .write import FORMATS, check_report_path, write_report

__all__ = ["CSS", "FORMATS", "SECTIONS", "SECTION_BUILDERS", "STATUS_MARK", "Badge", "Figure", "Footnotes", "Run",
           "Section", "Table", "as_runs", "attack_section", "bound_section", "bound_text", "build_report",
           "check_report_path", "curvature_section", "discrepancy_section", "eps_label", "grad_robustness_section",
           "load_inputs", "md_text", "pct", "render_html", "render_markdown", "run_notes", "value_text",
           "verdict_junit", "verdict_markdown", "verdict_section", "write_report", "xml_text"]
