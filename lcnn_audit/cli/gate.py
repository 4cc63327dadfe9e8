"""``lcnn-audit gate``: check a model against a YAML robustness policy (for CI).

Exit codes: 0 every check passed; 1 a check failed; 2 a usage or policy error (bad option,
invalid policy, missing result or a metric that cannot be evaluated); 3 an audit's own
validity check failed (a bug or a broken model); 130 interrupted.
"""

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from . import app
from . import options as o
from .common import Ctx, OutputArgs, command, console, plain, styled

STYLE = {"pass": "green", "fail": "bold red", "error": "yellow", "skip": "dim"}


@app.command()
def gate(
    policy: o.Policy,
    more_results: o.MoreResults = None,
    results: o.Results = None,
    json_path: o.VerdictJson = None,
    junit: o.Junit = None,
    markdown: o.Markdown = None,
    save_results: o.SaveResults = None,
    no_regression: o.NoRegression = False,
    quiet: o.Quiet = False,
    trust_policy: o.TrustPolicy = False,
    verbose: o.Verbose = False,
    threads: o.Threads = None,
) -> None:
    """Run a policy's audits (or read --results) and check every metric against its bound.

    Exit code 0: every check passed; 1: a check failed; 2: a usage or policy error (every
    policy problem is listed with its YAML path); 3: an audit's own validity check failed.
    """
    ctx = Ctx(OutputArgs(quiet=quiet, verbose=verbose), threads=threads)
    with command(ctx, locals(), check_outputs=False):
        _gate(ctx, policy, [*(results or []), *(more_results or [])], more_results=more_results, results=results,
              outputs={"--json": json_path, "--junit": junit, "--markdown": markdown}, save_results=save_results,
              no_regression=no_regression, trust_policy=trust_policy)


def _gate(ctx: Ctx, policy: Path, files: list[Path], *, more_results, results, outputs: dict,
          save_results: Path | None, no_regression: bool, trust_policy: bool) -> None:
    from ..errors import UsageError
    from ..gates import gate as run_gate
    from ..gates import load_policy

    if more_results and not results:
        raise UsageError(f"unexpected argument {more_results[0]}: pass result files with --results")
    if files and save_results is not None:
        raise UsageError("--save-results writes the results of audits the gate runs; with --results nothing runs")
    from ..io import check_outputs

    check_outputs(outputs, {"POLICY.yaml": policy, "--results": _expand(files)}, {"--save-results": save_results})
    pol = load_policy(policy, compute=not files, regression=not no_regression, trust=trust_policy)
    inputs = {"model.checkpoint": pol.model.checkpoint if pol.model else None,
              "data.path": pol.data.path if pol.data else None,
              "relative_to": [c.relative_to for c in pol.checks if c.relative_to]}
    check_outputs(outputs, inputs)
    if save_results is not None and save_results.is_dir():  # an audit's result must not replace an input
        check_outputs({f"--save-results ({a})": save_results / f"{a.replace('_', '-')}.json" for a in pol.audits},
                      {**inputs, "POLICY.yaml": policy})
    verdict, found = run_gate(pol, files, progress=ctx.progress)  # Ctrl-C: exit code 130 (see command)
    if save_results is not None:
        for res in found.values():
            console.print(f"wrote {res.save_json(save_results / f'{res.command}.json')}")
    render_verdict(ctx, verdict)
    _write_outputs(verdict, outputs["--json"], outputs["--junit"], outputs["--markdown"])
    raise typer.Exit(verdict.exit_code)


def _expand(files: list[Path]) -> list[Path]:
    """Result paths with each directory standing for its *.json files (as --results reads them)."""
    out: list[Path] = []
    for f in files:
        out += sorted(f.glob("*.json")) if f.is_dir() else [f]
    return out


def _write_outputs(verdict, json_path, junit, markdown) -> None:
    """Write the verdict as JSON, JUnit XML and Markdown, and say where (also with --quiet)."""
    from ..io import write_text
    from ..report import verdict_junit, verdict_markdown

    if json_path:
        console.print(f"wrote {verdict.save_json(json_path)}")
    if junit:
        console.print(f"wrote {write_text(junit, verdict_junit(verdict))}")
    if markdown:
        console.print(f"wrote {write_text(markdown, verdict_markdown(verdict))}")


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
