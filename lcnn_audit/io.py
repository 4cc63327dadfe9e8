"""Output files: checked before any computation, written atomically, never lost.

* :func:`check_outputs` refuses, up front, an output path that is a directory, whose folder
  cannot be created or written (a file in the way, no permission), that is one of the
  command's input files, or that two outputs share;
* everything is written to a temporary file in the destination's directory, flushed,
  fsync'ed and then renamed over the destination (``os.replace`` is atomic on POSIX and
  Windows): a file the user asked for is either complete or absent, and a failed write (a full
  disk, a permission error) is an :class:`~lcnn_audit.errors.OutputError` that leaves the
  previous file as it was;
* :func:`partial_path` (``PATH.partial``) is where a run keeps its work in progress towards
  ``PATH`` (the resume state of ``--json PATH``), and :func:`incomplete_path` where an
  interrupted run puts its partial result when the requested path already holds a complete one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from .errors import OutputError, UsageError

PathLike = str | os.PathLike


def _why(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return err.strerror or str(err) or type(err).__name__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    dest = Path(path)
    if dest.is_dir():
        raise OutputError(f"cannot write {dest}: it is a directory; give a file name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        raise OutputError(f"cannot write {dest}: {_why(err)}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp (and writers such as safetensors that recreate the file) leave 0600;
        # give the result the user's usual mode before it appears under its name
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, dest)
    except OSError as err:
        kept = "; the previous file is unchanged" if dest.exists() else ""
        raise OutputError(f"cannot write {dest}: {_why(err)}{kept}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Atomically write ``path`` with ``writer(tmp_path)`` (e.g. safetensors' save_file)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike, what: str = "file"):
    """Parse a JSON file, or raise a one-line UsageError naming ``what`` was missing or broken."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"cannot read {what} {p}: {_why(err)}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{what} {p} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {p} is not a text (JSON) file") from None


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        return False
    return a.resolve() == b.resolve()


def check_outputs(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | Iterable | None] = (),
                  dirs: Mapping[str, PathLike | None] = ()) -> None:
    """Refuse, before anything runs, output paths that could not be written or would destroy
    an input. ``outputs`` and ``dirs`` map an option name (``--json``) to a file path or an
    output directory, ``inputs`` an option name to an input path (or several). Raises one
    :class:`OutputError`. Missing folders are fine when they can be created (the write
    creates them, as CI recipes such as ``--json gate/verdict.json`` expect)."""
    files = {k: Path(v) for k, v in dict(outputs).items() if v is not None}
    folders = {k: Path(v) for k, v in dict(dirs).items() if v is not None}
    ins: list[tuple[str, Path]] = []
    for k, v in dict(inputs).items():
        for item in ([v] if isinstance(v, (str, os.PathLike)) else list(v or [])):
            if item is not None and Path(item).exists():
                ins.append((k, Path(item)))
    for opt, p in files.items():
        if p.is_dir():
            raise OutputError(f"{opt} {p} is a directory; give a file name")
        _check_folder(opt, p, p.parent)
    for opt, p in folders.items():
        if p.exists() and not p.is_dir():
            raise OutputError(f"{opt} {p} is a file, not a folder")
        _check_folder(opt, p, p)
    for opt, p in files.items():
        for name, q in ins:
            if _same(p, q):
                raise OutputError(f"{opt} {p} is also the input {name}: writing it would destroy the input; "
                                  "choose another output path")
    seen: dict[Path, str] = {}
    for opt, p in files.items():
        key = p.resolve()
        if key in seen:
            raise OutputError(f"{seen[key]} and {opt} name the same file {p}; give each output its own path")
        seen[key] = opt


def _check_folder(opt: str, p: Path, folder: Path) -> None:
    """``folder`` exists and is writable, or its nearest existing ancestor is a writable folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{opt} {p}: cannot create the folder {folder}: {probe} is a file")
    what = "write in" if probe == folder else "create the folder " + str(folder) + " in"
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{opt} {p}: cannot {what} {probe} (permission denied)")
    try:  # access() says yes for root and for read-only or virtual file systems: try it
        tempfile.TemporaryFile(dir=probe, prefix=".lcnn-audit-probe-").close()
    except OSError as err:
        raise OutputError(f"{opt} {p}: cannot {what} {probe} ({err.strerror or err})") from None


def partial_path(path: PathLike) -> Path:
    """``run.json`` -> ``run.json.partial``: where the work in progress towards ``path`` is
    kept until ``path`` is written (a run's resume state, ``--save-adv``'s shard folder)."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def incomplete_path(path: PathLike) -> Path:
    """``run.json`` -> ``run.incomplete.json``: where an interrupted run's partial result goes
    when ``path`` already holds a complete result."""
    p = Path(path)
    return p.with_name(f"{p.stem}.incomplete{p.suffix}")


def holds_complete_result(path: PathLike) -> bool:
    """Whether ``path`` exists and is anything other than an interrupted (``complete: false``)
    lcnn-audit result: such a file is never replaced by a partial one."""
    p = Path(path)
    if not p.exists():
        return False
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    return not (isinstance(d, dict) and d.get("complete") is False)
