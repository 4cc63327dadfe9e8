"""The Typer app; importing this module registers every command on it."""

import typer

app = typer.Typer(
    name="lcnn-audit",
    help="Audit PyTorch image classifiers for input-space curvature and adversarial robustness, "
    "and retrofit low-curvature (LCNN) layers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

from . import commands  # noqa: E402,F401  (registers the commands on ``app``)
