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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..errors import LcnnAuditError, UsageError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def _opt(*names, help: str, panel: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


M, D, O = "Model", "Data", "Output"
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
            "path/to/file.py:factory or package.module:factory."))], None),
        ("arch_kwargs", Annotated[str | None, _opt("--arch-kwargs", panel=M,
                                                      help="Factory keyword arguments, e.g. num_classes=100.")], None),
        ("trust_checkpoint", Annotated[bool, _opt("--trust-checkpoint", panel=M, help=(
            "Allow unpickling a checkpoint that needs code (a whole pickled nn.Module). Unpickling runs "
            "arbitrary code: only for checkpoints from a source you trust."))], False),
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
        ("n", Annotated[int | None, _opt("--n", "--num-samples", panel=D, help=(
            "Audit a seeded random subset of N samples (under torchrun write --num-samples: torchrun "
            "reads --n as an abbreviation of its own options)."))],
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
                    download=self.opts.get("download", False))

    def load_model(self, checkpoint: str | None = None):
        from ..loading import load_model

        kw = self.model_kwargs()
        if checkpoint is not None:
            kw["checkpoint"] = checkpoint
        return load_model(**kw)

    def load_data(self, split: str | None = None):
        from ..data import load_data

        return load_data(**self.data_kwargs(split))

    @property
    def state_path(self) -> Path | None:
        jp = self.opts.get("json_path")
        return jp.with_name(jp.name + ".partial") if jp else None

    @property
    def run_kwargs(self) -> dict:
        """Keyword arguments for library calls that run the resumable batch loop."""
        resume = self.opts.get("resume", False)
        if resume and not self.opts.get("json_path"):
            raise UsageError("--resume needs --json PATH (its progress lives in PATH.partial)")
        return {"state_path": self.state_path, "resume": resume}

    @contextmanager
    def progress(self, description: str):
        """Yield a ``progress(done, total)`` callback drawing a rich progress bar."""
        quiet = self.opts.get("quiet", False) or not _is_main_rank()
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
                      disable=quiet) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update

    def print(self, *args, **kw):
        if not self.opts.get("quiet", False) and _is_main_rank():
            console.print(*args, **kw)

    def notice(self, msg: str):
        if _is_main_rank():
            err_console.print(f"[yellow]note:[/] {msg}")

    def finish(self, result) -> None:
        """Write --json/--csv and say where; mark an interrupted run."""
        if not _is_main_rank():
            return
        jp, cp = self.opts.get("json_path"), self.opts.get("csv_path")
        if jp:
            result.save_json(jp)
            console.print(f"wrote {jp}")
        if cp:
            result.save_csv(cp)
            console.print(f"wrote {cp}")
        if not result.complete:
            where = f"; rerun with --resume to continue from {self.state_path}" if self.state_path else ""
            err_console.print(f"[yellow]interrupted:[/] partial result marked incomplete{where}")
            raise typer.Exit(130)


def _is_main_rank() -> bool:
    from ..runner import dist_info

    return dist_info()[0] == 0


def fail(err: LcnnAuditError) -> None:
    """Print a one-line error and exit with the error's code."""
    msg = " ".join(str(err).split())
    err_console.print(f"[bold red]error:[/] {msg}", soft_wrap=True)
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
            try:
                set_threads(ctx.opts.get("threads"))
                return fn(ctx=ctx, **kwargs)
            except LcnnAuditError as err:
                fail(err)
            except KeyboardInterrupt:
                err_console.print("[yellow]interrupted[/]")
                raise typer.Exit(130) from None

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        positional = [p for p in extra if p.name == "checkpoint"]
        wrapper.__signature__ = sig.replace(parameters=positional + params + [p for p in extra if p not in positional])
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        return wrapper

    return deco


def handle_errors(fn):
    """For commands without shared options: LcnnAuditError -> one line + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LcnnAuditError as err:
            fail(err)

    return wrapper


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
