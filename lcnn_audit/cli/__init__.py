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
    """Entry point; under torchrun (WORLD_SIZE > 1) the process group is set up first.

    SIGTERM is handled like Ctrl-C (the run saves its resume state and stops) and exits 143
    instead of 130. Click's usage errors (a bad value, a missing option) print as one
    ``error:`` line with exit code 2, like every other error."""
    import signal
    import sys

    sys.exit(_run(signal))


def _run(signal) -> int:
    terminated: list[int] = []

    def on_sigterm(signum, frame):
        terminated.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    from .common import err_console, styled

    exc = _click_exceptions()

    def interrupted() -> int:
        err_console.print("[yellow]interrupted[/]", markup=True)
        return 143 if terminated else 130

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        from ..distributed import init_from_env, shutdown

        init_from_env()
        try:
            rc = app(standalone_mode=False)
        finally:
            shutdown()
    except exc.ClickException as err:
        if isinstance(err, getattr(exc, "NoArgsIsHelpError", ())):
            err.show()  # the command's help, as click prints it
        else:
            err_console.print(styled("[bold red]error:[/] {}", click_message(err)), soft_wrap=True, markup=True)
        return err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return interrupted()
    rc = rc if isinstance(rc, int) else 0
    return 143 if rc == 130 and terminated else rc


def _click_exceptions():
    """The click exceptions module Typer raises from (Typer >= 0.20 vendors click as typer._click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # an older Typer on the real click
        from click import exceptions
    return exceptions


def click_message(err) -> str:
    """A click error as one line: what was wrong, and where to read the options."""
    msg = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    if isinstance(err, _click_exceptions().UsageError) and ctx is not None:
        msg += f" (see {ctx.command_path} --help)"
    return msg[0].lower() + msg[1:] if msg[:1].isupper() and not msg[1:2].isupper() else msg
