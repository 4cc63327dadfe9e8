"""The ``lcnn-audit`` command line: a thin Typer layer over the Python API."""

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


def main() -> None:
    """Entry point; under torchrun (WORLD_SIZE > 1) the process group is set up first."""
    from ..distributed import init_from_env, shutdown

    init_from_env()
    try:
        app()
    finally:
        shutdown()
