"""The ``lcnn-audit`` command line: a thin Typer layer over the Python API.

``app`` (the Typer app, in :mod:`._app`) is imported on first use, so that :func:`main`
handles a Ctrl-C that arrives while the commands and torch are still being imported."""


def __getattr__(name: str):
    if name == "app":
        from ._app import app

        return app
    raise AttributeError(f"module 'lcnn_audit.cli' has no attribute {name!r}")


def main() -> None:
    """Entry point; under torchrun (WORLD_SIZE > 1) the process group is set up first.

    SIGTERM is handled like Ctrl-C (the run saves its resume state and stops) and exits 143
    instead of 130. Click's usage errors (a bad value, a missing option) print as one
    ``error:`` line with exit code 2, like every other error."""
    import signal
    import sys

    rc = _run(signal)
    # the work is done and written: a Ctrl-C during the interpreter's shutdown (torch's
    # teardown takes a while) must not turn a finished run into a death by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(rc)


def _run(signal) -> int:
    """Run the app with SIGTERM turned into Ctrl-C; return the exit code. The SIGTERM handler
    in force before is restored afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return _run_app(signal)
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run_app(signal) -> int:
    import sys

    terminated: list[int] = []

    def on_sigterm(signum, frame):
        terminated.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def interrupted() -> int:
        import sys

        sys.stderr.write("interrupted\n")
        return 143 if terminated else 130

    # Ctrl-C while the commands (and torch) are imported is deferred to the end of the imports:
    # a KeyboardInterrupt inside an import leaves half-initialised modules (torch, sympy) that
    # fail later with a traceback
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        import typer

        from ._app import app
        from .common import err_console, styled

        exc = _click_exceptions()
        if len(sys.argv) > 1 and not {"-h", "--help", "--version"} & set(sys.argv[1:]):
            import torch  # noqa: F401  (every command needs them; a help screen does not)
            import torchvision  # noqa: F401

            from ..distributed import init_from_env, shutdown
        else:  # a help screen or the version: no torch, no process group
            init_from_env = shutdown = _no_process_group
    except KeyboardInterrupt:  # raised by an import itself (as the tests simulate)
        return interrupted()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        return interrupted()
    try:
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


def _no_process_group() -> None:
    """Stands in for :mod:`lcnn_audit.distributed` set-up and teardown when only help is printed."""


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
