"""Shared CLI plumbing: the shared options' values, error handling, progress and result output.

Every command declares its parameters with the aliases of :mod:`.options`, bundles the shared
ones explicitly into a :class:`Ctx` (:class:`ModelArgs`, :class:`DataArgs`,
:class:`OutputArgs`) and runs its body under :func:`command` (errors, threads, seed, output
checks).
"""

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ..allocator import tune_host_allocator
from ..errors import LcnnAuditError, UsageError
from .options import SINGLE_SPLIT_HELP, THREADS_HELP, VERBOSE_HELP  # noqa: F401 - their former home
from .options import Threads as THREADS  # noqa: F401
from .progress import configure_logging, progress_display
from .width import print_wide

# markup off: paths, labels and messages print literally ([exp1] stays, [/x] cannot crash the
# printer); the few styled words pass markup=True with the data escaped (see styled())
console = Console(stderr=False, highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


def plain(text) -> str:
    """``text`` for the terminal: control characters (ESC sequences from a hostile file could
    recolour, retitle or rewrite the terminal) shown as ``\\xNN``; tab and newline kept."""
    return "".join(ch if ch in "\t\n" or not (ord(ch) < 32 or 127 <= ord(ch) < 160) else f"\\x{ord(ch):02x}"
                   for ch in str(text))


def styled(markup: str, *data: str) -> str:
    """``markup`` (Rich markup with ``{}`` slots) with each of ``data`` escaped into its slot."""
    return markup.format(*(escape(plain(d)) for d in data))


@dataclass(frozen=True)
class ModelArgs:
    """The model options (CHECKPOINT, ``--arch``, ``--normalize``, ...), as a command received them."""

    checkpoint: str | None = None
    checkpoint_opt: str | None = None
    arch: str | None = None
    arch_kwargs: str | None = None
    trust_checkpoint: bool = False
    normalize: str | None = None
    output_key: str | None = None
    state_key: str | None = None

    @property
    def given(self) -> str | None:
        """CHECKPOINT or ``--checkpoint``, None when neither was given."""
        return self.checkpoint or self.checkpoint_opt

    @property
    def path(self) -> str:
        """The checkpoint; a usage error when none was given."""
        if not self.given:
            raise UsageError("no checkpoint given: pass CHECKPOINT (a file, or 'demo' for the bundled model)")
        return self.given

    def kwargs(self, device: str = "auto", dataset: str | None = None, checkpoint: str | None = None) -> dict:
        """Keyword arguments of :func:`lcnn_audit.model.load.load_model`."""
        return dict(checkpoint=checkpoint or self.path, arch=self.arch, arch_kwargs=self.arch_kwargs,
                    trust_checkpoint=self.trust_checkpoint, normalize=self.normalize, output_key=self.output_key,
                    state_key=self.state_key, device=device, dataset=dataset)


@dataclass(frozen=True)
class DataArgs:
    """The data options (``--data``, ``--split``, ``--n``, ``--seed``, ``--batch-size``, ``--device``, ...).
    ``data`` None: no data (``bound``/``convert`` without ``--data``)."""

    data: str | None = "demo"
    data_root: Path | None = None
    split: str = "test"
    single_split: bool = False
    n: int | None = None
    seed: int = 0
    batch_size: int = 128
    download: bool = False
    device: str = "auto"

    def kwargs(self, split: str | None = None, spec: str | None = None, n: int | None = None) -> dict:
        """Keyword arguments of :func:`lcnn_audit.data.load_data` (``split``/``spec``/``n`` override)."""
        return dict(spec=spec or self.data, split=split or self.split, n=self.n if n is None else n, seed=self.seed,
                    data_root=self.data_root, download=self.download, single_split=self.single_split)


@dataclass(frozen=True)
class OutputArgs:
    """The output options: ``--json``, ``--csv``, ``--quiet``, ``--verbose`` and ``--resume``."""

    json_path: Path | None = None
    csv_path: Path | None = None
    quiet: bool = False
    verbose: bool = False
    resume: bool = False


class Ctx:
    """Everything a command needs from the shared options, built explicitly by the command:
    ``Ctx(OutputArgs(...), model=ModelArgs(...), data=DataArgs(...), threads=threads)``.
    ``out`` may be a mapping of :class:`OutputArgs` fields (``Ctx({"quiet": True})``)."""

    def __init__(self, out: OutputArgs | Mapping | None = None, *, model: ModelArgs | None = None,
                 data: DataArgs | None = None, threads: int | None = None):
        self.out = out if isinstance(out, OutputArgs) else OutputArgs(**(out or {}))
        self.model, self.data, self.threads = model, data, threads

    @classmethod
    def of(cls, params: Mapping) -> "Ctx":
        """The shared options among a command's ``params`` (its arguments, ``locals()``), picked
        by the field names of :class:`ModelArgs`, :class:`DataArgs` and :class:`OutputArgs`:
        model options when it takes CHECKPOINT, data options when it takes ``--data``."""
        def pick(kind) -> dict:
            return {f.name: params[f.name] for f in fields(kind) if f.name in params}

        model = ModelArgs(**pick(ModelArgs)) if "checkpoint" in params else None
        data = DataArgs(**pick(DataArgs)) if "data" in params else None
        return cls(OutputArgs(**pick(OutputArgs)), model=model, data=data, threads=params.get("threads"))

    @property
    def checkpoint_path(self) -> str:
        """The checkpoint given (a usage error when none was)."""
        return (self.model or ModelArgs()).path

    @property
    def seed(self) -> int:
        """``--seed``."""
        return (self.data or DataArgs()).seed

    @property
    def batch_size(self) -> int:
        """``--batch-size``."""
        return (self.data or DataArgs()).batch_size

    def load_model(self, checkpoint: str | None = None):
        """The model as every command loads it (``checkpoint`` overrides CHECKPOINT)."""
        from ..model.load import load_model

        data = self.data or DataArgs(data=None)
        return load_model(**(self.model or ModelArgs()).kwargs(data.device, data.data, checkpoint))

    def load_data(self, split: str | None = None, spec: str | None = None):
        """The data of the data options (``split``/``spec`` override ``--split``/``--data``); None without data."""
        from ..data import load_data

        if self.data is None or (spec or self.data.data) is None:
            return None
        return load_data(**self.data.kwargs(split, spec))

    @property
    def state_path(self) -> Path | None:
        """``<json>.partial``, the resume state of the batch loop (None without ``--json``)."""
        from ..io import partial_path  # at run time: the help screens need no output plumbing

        jp = self.out.json_path
        return partial_path(jp) if jp else None

    @property
    def run_kwargs(self) -> dict:
        """Keyword arguments for library calls that run the resumable batch loop."""
        if self.out.resume and not self.out.json_path:
            raise UsageError("--resume needs --json PATH (its progress lives in PATH.partial)")
        # the state outlives a complete run until finish() has written the result
        return {"state_path": self.state_path, "resume": self.out.resume, "keep_state": self.state_path is not None}

    def inputs(self) -> dict:
        """The input files of the shared options (what no output may overwrite)."""
        model = self.model or ModelArgs()
        return {"CHECKPOINT": model.given, "--data": self.data.data if self.data else None,
                "--arch": str(model.arch or "").rpartition(":")[0] or None}

    def check_outputs(self, outputs: dict | None = None, inputs: dict | None = None, dirs: dict | None = None) -> None:
        """Check --json, --csv and the command's own ``outputs`` before anything runs (see
        :func:`lcnn_audit.io.check_outputs`)."""
        from ..io import check_outputs

        outs = {"--json": self.out.json_path, "--csv": self.out.csv_path, **(outputs or {}),
                "the resume state (--json PATH.partial)": self.state_path}
        check_outputs(outs, {**self.inputs(), **(inputs or {})}, dirs or {})

    @contextmanager
    def progress(self, description: str):
        """Yield a ``progress(done, total)`` callback: a rich bar on a terminal, heartbeat lines
        in CI logs (see :mod:`.progress`), nothing with --quiet."""
        quiet = self.out.quiet or not _is_main_rank()
        with progress_display(description, err_console, quiet=quiet) as bar:
            yield bar

    def print(self, *args, **kw):
        """Print to stdout (tables at their natural width), unless --quiet or not rank 0."""
        if not self.out.quiet and _is_main_rank():
            print_wide(console, *args, **kw)

    def notice(self, msg: str):
        """A ``note: ...`` line on stderr (rank 0 only)."""
        if _is_main_rank():
            err_console.print(styled("[yellow]note:[/] {}", msg), markup=True, soft_wrap=True)

    def finish(self, result) -> None:
        """Write --json/--csv and say where; mark an interrupted run.

        An interrupted run never replaces a complete result: its partial result goes beside it
        (``NAME.incomplete.json``). The resume state is removed only once every file is written."""
        if not _is_main_rank():  # its shard is on rank 0 now; only rank 0 writes
            if result.complete:
                self._drop_state()
            return
        for path, save in ((self.out.json_path, result.save_json), (self.out.csv_path, result.save_csv)):
            if path:
                console.print(f"wrote {write_result(path, save, result.complete)}")
        if result.complete:
            self._drop_state()
            return
        where = f"; rerun with --resume to continue from {self.state_path}" if self.state_path else ""
        err_console.print(styled("[yellow]interrupted:[/] partial result marked incomplete{}", where),
                          markup=True)
        raise typer.Exit(interrupt_code())

    def _drop_state(self) -> None:
        """Remove this rank's resume state files (once the result is safely written)."""
        if self.state_path is not None:
            from ..runner import state_files

            for f in state_files(self.state_path):
                f.unlink()


def write_result(path: Path, save, complete: bool) -> Path:
    """``save(path)``; for an interrupted run, ``save(NAME.incomplete.EXT)`` instead when
    ``path`` already holds a complete result (which then stays as it was). A complete run
    removes a stale ``NAME.incomplete.EXT``."""
    from ..io import holds_complete_result, incomplete_path

    beside = incomplete_path(path)
    if not complete and holds_complete_result(path):
        save(beside)
        err_console.print(f"note: {path} holds a complete result and is kept; the partial result is in {beside}")
        return beside
    save(path)
    if complete and beside.is_file():
        beside.unlink()
    return Path(path)


def interrupt_code() -> int:
    """130 (128 + SIGINT); main() turns it into 143 when the stop came from SIGTERM."""
    return 130


def _is_main_rank() -> bool:
    from ..runner import dist_info

    return dist_info()[0] == 0


def fail(err: LcnnAuditError) -> None:
    """Print a one-line error and exit with the error's code. Option problems name their
    fields as flags (``max_iter`` -> ``--max-iter``)."""
    from ..options import OptionsError, flag_label

    text = err.render(flag_label) if isinstance(err, OptionsError) else str(err)
    msg = " ".join(text.split())
    err_console.print(styled("[bold red]error:[/] {}", msg), soft_wrap=True, markup=True)
    raise typer.Exit(err.exit_code)


def default_threads() -> int:
    """The ``--threads`` default: $OMP_NUM_THREADS, else usable CPUs minus busy ones (≥ 1)."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cpus - busy)


def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads`` to ``threads`` (None: :func:`default_threads`); returns it."""
    import torch

    n = default_threads() if threads is None else threads
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


@contextmanager
def command(ctx: Ctx, params: Mapping | None = None, *, check_outputs: bool = True):
    """Run a command's body: the logging of --verbose, every float of ``params`` (the command's
    arguments) finite, ``--json``/``--csv`` checked (``check_outputs``), ``--seed`` valid,
    ``--threads`` set; a library error becomes one ``error:`` line and its exit code, Ctrl-C
    exit code 130. Used by every command as ``with command(ctx, locals()):``."""
    configure_logging(ctx.out.verbose, err_console)
    try:
        check_float_options(dict(params or {}))
        if check_outputs:
            ctx.check_outputs()  # the command checks its own outputs with these again
        if ctx.data is not None:
            from ..rng import check_seed  # torch: imported by the command, not by its help

            check_seed(ctx.data.seed)
        set_threads(ctx.threads)
        tune_host_allocator()
        with cli_warnings():
            yield ctx
    except LcnnAuditError as err:
        fail(err)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]", markup=True)
        raise typer.Exit(interrupt_code()) from None


def check_float_options(values: dict) -> None:
    """Every float option is finite: ``--eps nan`` or ``--tol inf`` is an error, never a NaN result."""
    from ..validation import finite_problems

    problems = finite_problems(values.items())
    if problems:
        raise UsageError("; ".join(problems))


@contextmanager
def cli_warnings():
    """The CLI prints the notices of every result itself (``note: ...``): silence the
    :class:`~lcnn_audit.notices.LcnnAuditNotice` warnings the library raises for notebooks."""
    import warnings

    from ..notices import LcnnAuditNotice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LcnnAuditNotice)
        yield


def parse_float_list(text: str | None, what: str) -> list[float] | None:
    """Comma-separated numbers (``--radii``, ``--milestones``) as floats; None stays None."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise UsageError(f"{what} is empty")
    return vals
