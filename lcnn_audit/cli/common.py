"""Shared CLI plumbing: option groups, error handling, progress and result output.

Commands declare only their own options; ``@command_options(...)`` adds the shared model,
data and output options to the signature Typer sees and hands the command a :class:`Ctx`.
"""

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import LcnnAuditError, UsageError
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


def _opt(*names, help: str, panel: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


M, D, O = "Model", "Data", "Output"
SINGLE_SPLIT_HELP = ("Read an ImageFolder without train/ and test/ subfolders (class folders directly inside) as "
                     "the requested split; without it such a folder is refused, so that it never silently serves as "
                     "both splits.")
VERBOSE_HELP = ("Also print the library's log messages. Without a terminal (CI), progress is a plain line every "
                "$LCNN_AUDIT_HEARTBEAT seconds (default 15).")
THREADS_HELP = ("Torch intra-op CPU threads. Default: $OMP_NUM_THREADS if set, else the CPUs this process may "
                "use minus those the 1-minute load average says are busy (at least 1): on 2 shared cores, two "
                "threads made small batches 4-22x slower than one (docs/benchmarks.md).")
THREADS = Annotated[int | None, _opt("--threads", panel="Runtime", help=THREADS_HELP, min=1, show_default=False)]
PARAMS = {
    "model": [
        ("checkpoint", Annotated[str | None, typer.Argument(
            help="Checkpoint file (.safetensors, .pt/.pth, TorchScript, .pt2) or 'demo' for the bundled model.",
            show_default=False)], None),
        ("checkpoint_opt", Annotated[str | None, _opt("--checkpoint", help="Same as the CHECKPOINT argument.",
                                                          panel=M, show_default=False)], None),
        ("arch", Annotated[str | None, _opt("--arch", panel=M, help=(
            "Architecture for weight-only checkpoints: torchvision name (resnet18), built-in (small_cnn), "
            "timm:NAME (needs timm), path/to/file.py:factory or package.module:factory."))], None),
        ("arch_kwargs", Annotated[str | None, _opt("--arch-kwargs", panel=M,
                                                      help="Factory keyword arguments, e.g. num_classes=100.")], None),
        ("trust_checkpoint", Annotated[bool, _opt("--trust-checkpoint", panel=M, help=(
            "Allow checkpoints that run code: a whole pickled nn.Module, TorchScript, a torch.export .pt2, and "
            "a safetensors recipe naming a file.py:factory or module:factory. Only for files from a source you "
            "trust (docs/security.md)."))], False),
        ("normalize", Annotated[str | None, _opt("--normalize", panel=M, help=(
            "Normalisation inside the model: none, dataset (the dataset's documented mean/std), a dataset "
            "name, or MEAN,STD numbers (m1,..,mC,s1,..,sC). Default: the checkpoint's recipe, else none."))],
         None),
        ("output_key", Annotated[str | None, _opt("--output-key", panel=M, help=(
            "Select the logits from a model that returns a dict/object (key or attribute) or tuple (index)."))],
         None),
        ("state_key", Annotated[str | None, _opt("--state-key", panel=M,
                                                    help="Key of the state dict inside a nested .pt checkpoint.")],
         None),
    ],
    "data": [
        ("data", Annotated[str, _opt("--data", panel=D, help=(
            "demo, cifar10, cifar100, mnist, fashion-mnist, svhn, an ImageFolder directory, or a .pt/.npz "
            "tensor file with x (N,C,H,W in [0,1]) and y."))], "demo"),
        ("data_root", Annotated[Path | None, _opt("--data-root", panel=D, help=(
            "Where named datasets live (default ./data; fashion-mnist also looks in "
            "/usr/share/datasets/fashion-mnist)."))], None),
        ("split", Annotated[str, _opt("--split", panel=D, help="train or test (train is read without "
                                                               "augmentation).")], "test"),
        ("single_split", Annotated[bool, _opt("--single-split", panel=D, help=SINGLE_SPLIT_HELP)], False),
        ("n", Annotated[int | None, _opt("--n", "--num-samples", panel=D, help=(
            "Audit a seeded random subset of N samples. Default: all samples of the split (under torchrun "
            "write --num-samples: torchrun reads --n as an abbreviation of its own options)."))],
         None),
        ("seed", Annotated[int, _opt("--seed", panel=D, help="Seed for the subset and all random draws.")], 0),
        ("batch_size", Annotated[int, _opt("--batch-size", panel=D, help="Samples per batch.", min=1)], 128),
        ("download", Annotated[bool, _opt("--download", panel=D, help="Download a named dataset if missing "
                                                                      "(needs internet).")], False),
        ("device", Annotated[str, _opt("--device", panel=D, help="auto, cpu, cuda or cuda:K.")], "auto"),
    ],
    "output": [
        ("json_path", Annotated[Path | None, _opt("--json", panel=O, help="Write the result JSON here "
                                                                             "(atomically).")], None),
        ("csv_path", Annotated[Path | None, _opt("--csv", panel=O, help="Write per-sample rows as CSV.")], None),
        ("quiet", Annotated[bool, _opt("--quiet", "-q", panel=O, help="Print only the result paths.")], False),
        ("verbose", Annotated[bool, _opt("--verbose", "-v", panel=O, help=VERBOSE_HELP)], False),
    ],
    "verbosity": [
        ("quiet", Annotated[bool, _opt("--quiet", "-q", panel=O, help="Print only the result paths.")], False),
        ("verbose", Annotated[bool, _opt("--verbose", "-v", panel=O, help=VERBOSE_HELP)], False),
    ],
    "runtime": [("threads", THREADS, None)],
    "resume": [
        ("resume", Annotated[bool, _opt("--resume", panel=O, help=(
            "Continue an interrupted run from <json>.partial (needs --json; per-batch progress is saved "
            "there)."))], False),
    ],
}


@dataclass
class Ctx:
    """Everything a command needs from the shared options."""

    opts: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.opts[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def checkpoint_path(self) -> str:
        ck = self.opts.get("checkpoint") or self.opts.get("checkpoint_opt")
        if not ck:
            raise UsageError("no checkpoint given: pass CHECKPOINT (a file, or 'demo' for the bundled model)")
        return ck

    def model_kwargs(self) -> dict:
        return dict(
            checkpoint=self.checkpoint_path, arch=self.opts.get("arch"), arch_kwargs=self.opts.get("arch_kwargs"),
            trust_checkpoint=self.opts.get("trust_checkpoint", False), normalize=self.opts.get("normalize"),
            output_key=self.opts.get("output_key"), state_key=self.opts.get("state_key"),
            device=self.opts.get("device", "auto"), dataset=self.opts.get("data"),
        )

    def data_kwargs(self, split: str | None = None) -> dict:
        return dict(spec=self.opts["data"], split=split or self.opts["split"], n=self.opts.get("n"),
                    seed=self.opts["seed"], data_root=self.opts.get("data_root"),
                    download=self.opts.get("download", False), single_split=self.opts.get("single_split", False))

    def load_model(self, checkpoint: str | None = None):
        from ..model.load import load_model

        kw = self.model_kwargs()
        if checkpoint is not None:
            kw["checkpoint"] = checkpoint
        return load_model(**kw)

    def load_data(self, split: str | None = None):
        from ..data import load_data

        return load_data(**self.data_kwargs(split))

    @property
    def state_path(self) -> Path | None:
        from ..io import partial_path  # at run time: the help screens need no output plumbing

        jp = self.opts.get("json_path")
        return partial_path(jp) if jp else None

    @property
    def run_kwargs(self) -> dict:
        """Keyword arguments for library calls that run the resumable batch loop."""
        resume = self.opts.get("resume", False)
        if resume and not self.opts.get("json_path"):
            raise UsageError("--resume needs --json PATH (its progress lives in PATH.partial)")
        # the state outlives a complete run until finish() has written the result
        return {"state_path": self.state_path, "resume": resume, "keep_state": self.state_path is not None}

    def inputs(self) -> dict:
        """The input files of the shared options (what no output may overwrite)."""
        return {"CHECKPOINT": self.opts.get("checkpoint") or self.opts.get("checkpoint_opt"),
                "--data": self.opts.get("data"), "--arch": str(self.opts.get("arch") or "").rpartition(":")[0]
                or None}

    def check_outputs(self, outputs: dict | None = None, inputs: dict | None = None, dirs: dict | None = None) -> None:
        """Check --json, --csv and the command's own ``outputs`` before anything runs (see
        :func:`lcnn_audit.io.check_outputs`)."""
        from ..io import check_outputs

        outs = {"--json": self.opts.get("json_path"), "--csv": self.opts.get("csv_path"), **(outputs or {}),
                "the resume state (--json PATH.partial)": self.state_path}
        check_outputs(outs, {**self.inputs(), **(inputs or {})}, dirs or {})

    @contextmanager
    def progress(self, description: str):
        """Yield a ``progress(done, total)`` callback: a rich bar on a terminal, heartbeat lines
        in CI logs (see :mod:`.progress`), nothing with --quiet."""
        quiet = self.opts.get("quiet", False) or not _is_main_rank()
        with progress_display(description, err_console, quiet=quiet) as bar:
            yield bar

    def print(self, *args, **kw):
        if not self.opts.get("quiet", False) and _is_main_rank():
            print_wide(console, *args, **kw)

    def notice(self, msg: str):
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
        jp, cp = self.opts.get("json_path"), self.opts.get("csv_path")
        for path, save in ((jp, result.save_json), (cp, result.save_csv)):
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


def command_options(*groups: str):
    """Add the shared option ``groups`` (and ``--threads``) to a command; it receives them as ``ctx: Ctx``."""
    groups = (*groups, "runtime")

    def deco(fn):
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "ctx"]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
                 for g in groups for name, ann, default in PARAMS[g]]
        shared = {p.name for p in extra}

        @functools.wraps(fn)
        def wrapper(**kwargs):
            ctx = Ctx({k: kwargs.pop(k) for k in list(kwargs) if k in shared})
            configure_logging(ctx.opts.get("verbose", False), err_console)
            try:
                check_float_options(kwargs)
                if "output" in groups:
                    ctx.check_outputs()  # the command checks its own outputs with these again
                if "seed" in ctx.opts:
                    from ..rng import check_seed  # torch: imported by the command, not by its help

                    check_seed(ctx.opts["seed"])
                set_threads(ctx.opts.get("threads"))
                with cli_warnings():
                    return fn(ctx=ctx, **kwargs)
            except LcnnAuditError as err:
                fail(err)
            except KeyboardInterrupt:
                err_console.print("[yellow]interrupted[/]", markup=True)
                raise typer.Exit(interrupt_code()) from None

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        positional = [p for p in extra if p.name == "checkpoint"]
        wrapper.__signature__ = sig.replace(parameters=positional + params + [p for p in extra if p not in positional])
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        return wrapper

    return deco


def check_float_options(values: dict) -> None:
    """Every float option is finite: ``--eps nan`` or ``--tol inf`` is an error, never a NaN result."""
    from ..validation import finite_problems

    problems = finite_problems(values.items())
    if problems:
        raise UsageError("; ".join(problems))


def handle_errors(fn):
    """For commands without shared options: LcnnAuditError -> one line + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        configure_logging(kwargs.get("verbose", False), err_console)
        try:
            with cli_warnings():
                return fn(*args, **kwargs)
        except LcnnAuditError as err:
            fail(err)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]", markup=True)
            raise typer.Exit(interrupt_code()) from None

    return wrapper


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
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise UsageError(f"{what} is empty")
    return vals
