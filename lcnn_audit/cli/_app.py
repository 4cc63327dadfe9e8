"""The Typer app; importing this module registers every command on it."""

import typer

app = typer.Typer(
    name="lcnn-audit",
    help="Audit PyTorch image classifiers for input-space curvature and adversarial robustness, "
    "and retrofit low-curvature (LCNN) layers. Without a terminal (CI logs, pipes) tables print at full width "
    "(set COLUMNS=N to fix it) and progress is a plain line every $LCNN_AUDIT_HEARTBEAT seconds (default 15).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"lcnn-audit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_show_version),
) -> None:
    """The options before the command."""


from . import commands  # noqa: E402,F401  (registers the commands on ``app``)
