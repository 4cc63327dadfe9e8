"""``lcnn-audit gate``: check a model against a YAML robustness policy (for CI).

Exit codes: 0 every check passed; 1 a check failed; 2 a usage or policy error (bad option,
invalid policy, missing result or a metric that cannot be evaluated); 3 an audit's own
validity check failed (a bug or a broken model); 130 interrupted.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from . import app
from .common import THREADS, VERBOSE_HELP, Ctx, console, err_console, handle_errors, plain, set_threads, styled

O = "Output"
STYLE = {"pass": "green", "fail": "bold red", "error": "yellow", "skip": "dim"}


@app.command()
@handle_errors
def gate(
    policy: Annotated[Path, typer.Argument(help="The policy YAML: model, data, audits and checks.",
                                           metavar="POLICY.yaml", show_default=False)],
    more_results: Annotated[list[Path] | None, typer.Argument(
        help="More result files, as if each had --results (so that --results runs/*.json works).",
        metavar="RESULT.json", show_default=False)] = None,
    results: Annotated[list[Path] | None, typer.Option(
        "--results", help="Check these existing result files (--json of curvature, attack, grad-robustness, "
                          "discrepancy, bound; a directory means its *.json) instead of running the audits.",
        show_default=False)] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the verdict JSON here.",
                                                   rich_help_panel=O)] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here (one testcase per check).",
                                               rich_help_panel=O)] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary here (append it to "
                                                       "$GITHUB_STEP_SUMMARY).", rich_help_panel=O)] = None,
    save_results: Annotated[Path | None, typer.Option(
        help="Write each audit's result JSON into this directory (for `lcnn-audit report`, or a later "
             "--results run).", rich_help_panel=O)] = None,
    no_regression: Annotated[bool, typer.Option(
        "--no-regression", help="Skip the relative_to checks and read no baseline (to create the first baseline "
                                "with --json or --save-results).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the verdict line.",
                                        rich_help_panel=O)] = False,
    trust_policy: Annotated[bool, typer.Option(
        "--trust-policy", help="Allow the policy's model.arch to name code (file.py:factory, package.module:factory) "
                               "and its model.trust_checkpoint: only for a policy you wrote or reviewed.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP, rich_help_panel=O)] = False,
    threads: THREADS = None,
) -> None:
    """Run a policy's audits (or read --results) and check every metric against its bound.

    Exit code 0: every check passed; 1: a check failed; 2: a usage or policy error (every
    policy problem is listed with its YAML path); 3: an audit's own validity check failed.
    """
    set_threads(threads)
    from ..errors import UsageError
    from ..gates import gate as run_gate
    from ..gates import load_policy

    files = [*(results or []), *(more_results or [])]
    if more_results and not results:
        raise UsageError(f"unexpected argument {more_results[0]}: pass result files with --results")
    if files and save_results is not None:
        raise UsageError("--save-results writes the results of audits the gate runs; with --results nothing runs")
    from ..io import check_outputs

    ctx = Ctx({"quiet": quiet})
    outputs = {"--json": json_path, "--junit": junit, "--markdown": markdown}
    check_outputs(outputs, {"POLICY.yaml": policy, "--results": _expand(files)}, {"--save-results": save_results})
    pol = load_policy(policy, compute=not files, regression=not no_regression, trust=trust_policy)
    inputs = {"model.checkpoint": pol.model.checkpoint if pol.model else None,
              "data.path": pol.data.path if pol.data else None,
              "relative_to": [c.relative_to for c in pol.checks if c.relative_to]}
    check_outputs(outputs, inputs)
    if save_results is not None and save_results.is_dir():  # an audit's result must not replace an input
        check_outputs({f"--save-results ({a})": save_results / f"{a.replace('_', '-')}.json" for a in pol.audits},
                      {**inputs, "POLICY.yaml": policy})
    try:
        verdict, found = run_gate(pol, files, progress=ctx.progress)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]", markup=True)
        raise typer.Exit(130) from None
    if save_results is not None:
        for res in found.values():
            ctx.print(f"wrote {res.save_json(save_results / f'{res.command}.json')}")
    render_verdict(ctx, verdict)
    _write_outputs(ctx, verdict, json_path, junit, markdown)
    raise typer.Exit(verdict.exit_code)


def _expand(files: list[Path]) -> list[Path]:
    """Result paths with each directory standing for its *.json files (as --results reads them)."""
    out: list[Path] = []
    for f in files:
        out += sorted(f.glob("*.json")) if f.is_dir() else [f]
    return out


def _write_outputs(ctx: Ctx, verdict, json_path, junit, markdown) -> None:
    from ..io import write_text
    from ..report import verdict_junit, verdict_markdown

    if json_path:
        ctx.print(f"wrote {verdict.save_json(json_path)}")
    if junit:
        ctx.print(f"wrote {write_text(junit, verdict_junit(verdict))}")
    if markdown:
        ctx.print(f"wrote {write_text(markdown, verdict_markdown(verdict))}")


def render_verdict(ctx: Ctx, verdict) -> None:
    """The checks as a table, then the verdict line (printed even with --quiet)."""
    from ..report import bound_text, value_text

    for note in verdict.notices:
        ctx.notice(note)
    table = Table(title=plain(f"gate {verdict.name}: {len(verdict.checks)} check(s)"), title_justify="left")
    for col in ("status", "check", "value", "bound", "detail"):
        table.add_column(col, overflow="fold", no_wrap=col in ("status", "value", "bound"))
    for c in verdict.checks:
        table.add_row(Text(c.status, style=STYLE.get(c.status, "")),
                      *(plain(t) for t in (c.name, value_text(c), bound_text(c), c.message)))
    ctx.print(table)
    counts = ", ".join(f"{verdict.count(s)} {s}" for s in STYLE if verdict.count(s))
    word = {"pass": "[bold green]PASSED[/]", "fail": "[bold red]FAILED[/]",
            "error": "[bold yellow]ERROR[/] (a check could not be evaluated)"}[verdict.status]
    console.print(styled("verdict: " + word + " ({}); exit code {}", counts, verdict.exit_code), markup=True)
