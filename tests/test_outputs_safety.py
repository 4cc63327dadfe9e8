"""Results are never lost: output paths are checked before anything runs, a failed write keeps
the old file and the resume state, an interrupted rerun never replaces a complete result,
--save-adv never follows a symlink, SIGTERM is handled like Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lcnn_audit import io as lio
from lcnn_audit.attacks.adv_store import AdvStore
from tests.gate_helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
FAST = ("--n", "4", "--batch-size", "2", "--max-iter", "5", "--fro-probes", "0", "--jacobian", "off")


def flat(text: str) -> str:
    return " ".join(text.split())


def one_line_error(res, *words, alone: bool = True):
    """Exit 2 with an ``error:`` line (the only output unless ``alone=False``), no traceback."""
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("error:") and (len(lines) == 1 or not alone), res.output
    assert "Traceback" not in res.output
    for w in words:
        assert w in res.output, (w, res.output)


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if a command gets as far as loading a model or data."""
    import lcnn_audit.data
    import lcnn_audit.loading
    import lcnn_audit.model.load

    def boom(*a, **k):
        raise AssertionError("the output path was not checked before loading")

    monkeypatch.setattr(lcnn_audit.loading, "load_model", boom)
    monkeypatch.setattr(lcnn_audit.model.load, "load_model", boom)  # its home since issue 13
    monkeypatch.setattr(lcnn_audit.data, "load_data", boom)


def _policy(tmp_path) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text("checks:\n  - {metric: curvature.curvature.mean, max: 10}\n")
    return p


def _cases(tmp_path: Path, make: bool = True):
    d, data, ck, res = tmp_path / "adir", tmp_path / "d.pt", tmp_path / "m.safetensors", tmp_path / "r.json"
    pol = _policy(tmp_path) if make else tmp_path / "p.yaml"
    if make:
        d.mkdir()
        data.write_bytes(b"not read")
        ck.write_bytes(b"not read")
        res.write_text("{}")
    missing = res / "sub"  # a folder that cannot be created: a file is in the way
    return {
        "json is a directory": (["curvature", "demo", "--json", d], ["--json", "is a directory"]),
        "csv folder cannot be created": (["curvature", "demo", "--csv", missing / "x.csv"], ["--csv", "is a file"]),
        "json onto the data": (["curvature", "demo", "--data", data, "--json", data], ["--json", "input --data"]),
        "json onto the checkpoint": (["discrepancy", ck, "--json", ck], ["--json", "input CHECKPOINT"]),
        "json and csv the same": (["attack", "demo", "--json", tmp_path / "a", "--csv", tmp_path / "a"],
                                  ["--json and --csv name the same file"]),
        "csv onto the resume state": (["curvature", "demo", "--json", tmp_path / "a.json", "--csv",
                                       tmp_path / "a.json.partial"], ["--csv and the resume state"]),
        "save-adv is a directory": (["attack", "demo", "--save-adv", d], ["--save-adv", "is a directory"]),
        "attack plot folder cannot be created": (["attack", "demo", "--plot", missing / "p.png"],
                                                 ["--plot", "is a file"]),
        "grad plot unknown type": (["grad-robustness", "demo", "--plot", tmp_path / "p.gif"], ["unknown image type"]),
        "grad plot onto compare": (["grad-robustness", "demo", "--compare", ck, "--plot", ck.with_suffix(".png"),
                                    "--json", ck], ["input --compare"]),
        "convert output is a directory": (["convert", "demo", "-o", tmp_path / "adir.safetensors", "--json", d],
                                          ["is a directory"]),
        "convert output onto checkpoint": (["convert", ck, "-o", ck], ["--output", "input CHECKPOINT"]),
        "convert to .pt": (["convert", "demo", "-o", tmp_path / "out.pt"], ["safetensors", "out.safetensors"]),
        "bound json is a directory": (["bound", "demo", "--json", d], ["is a directory"]),
        "finetune out onto checkpoint": (["finetune", ck, "-o", ck], ["--out", "input CHECKPOINT"]),
        "finetune json onto data": (["finetune", "demo", "-o", tmp_path / "o.safetensors", "--data", data,
                                     "--json", data], ["--json", "input --data"]),
        "report onto its input": (["report", res, "-o", tmp_path / "r.json"], ["unknown report type"]),
        "report onto its input (html)": (["report", tmp_path / "x.html", "-o", tmp_path / "x.html"],
                                         ["-o", "input RUN.json"]),
        "report folder cannot be created": (["report", res, "-o", missing / "r.html"], ["is a file"]),
        "gate json onto the policy": (["gate", pol, "--results", res, "--json", pol], ["--json", "POLICY.yaml"]),
        "gate json onto a result": (["gate", pol, "--results", res, "--json", res], ["--json", "--results"]),
        "gate junit is a directory": (["gate", pol, "--results", res, "--junit", d], ["--junit", "is a directory"]),
        "gate markdown folder cannot be created": (["gate", pol, "--results", res, "--markdown", missing / "s.md"],
                                         ["--markdown", "is a file"]),
        "gate save-results is a file": (["gate", pol, "--save-results", res], ["--save-results", "is a file"]),
        "demo out is a file": (["demo", "--out", res], ["--out", "is a file"]),
    }


CASES = list(_cases(Path("/nonexistent"), make=False))


@pytest.mark.parametrize("case", CASES)
def test_bad_output_path_is_refused_before_anything_runs(tmp_path, no_compute, case):
    args, words = _cases(tmp_path)[case]
    if case == "report onto its input (html)":
        (tmp_path / "x.html").write_text("<html></html>")
    one_line_error(invoke(*args), *words)


def test_unwritable_folder_is_refused(tmp_path, monkeypatch, no_compute):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(lio.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    one_line_error(invoke("curvature", "demo", "--json", locked / "r.json"), "--json", "permission denied")
    one_line_error(invoke("curvature", "demo", "--json", locked / "new" / "r.json"), "cannot create the folder",
                   "permission denied")


def test_missing_folders_are_created(tmp_path):
    out = tmp_path / "gate" / "runs" / "r.json"
    res = invoke("curvature", "demo", *FAST, "--json", out)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["complete"]


def test_check_outputs_library_api(tmp_path):
    (tmp_path / "in.pt").write_bytes(b"x")
    lio.check_outputs({"--json": tmp_path / "new.json"}, {"--data": tmp_path / "in.pt"})
    with pytest.raises(lio.OutputError, match="is also the input --data"):
        lio.check_outputs({"--json": tmp_path / "." / "in.pt"}, {"--data": [tmp_path / "in.pt"]})
    link = tmp_path / "link.pt"
    link.symlink_to(tmp_path / "in.pt")
    with pytest.raises(lio.OutputError, match="is also the input"):
        lio.check_outputs({"--json": link}, {"--data": tmp_path / "in.pt"})


# --------------------------------------------------------------------------- failed writes


def _failing_replace(monkeypatch, name: str, code: int = errno.ENOSPC):
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == name:
            raise OSError(code, os.strerror(code))
        return real(src, dst)

    monkeypatch.setattr(lio.os, "replace", replace)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left"), (errno.EACCES, "Permission denied")])
def test_full_disk_keeps_the_old_file_and_the_resume_state(tmp_path, monkeypatch, code, words):
    out = tmp_path / "r.json"
    out.write_text("the previous result")
    _failing_replace(monkeypatch, "r.json", code)
    res = invoke("curvature", "demo", *FAST, "--json", out)
    one_line_error(res, f"cannot write {out}", words, "previous file is unchanged", alone=False)
    assert out.read_text() == "the previous result"
    state = tmp_path / "r.json.partial"
    assert state.is_file() and json.loads(state.read_text())["done"] == 4, "the resume state was lost"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.json.partial"], "a temporary file was left"
    monkeypatch.undo()
    res = invoke("curvature", "demo", *FAST, "--json", out, "--resume")
    assert res.exit_code == 0, res.output
    done = json.loads(out.read_text())
    assert done["complete"] and len(done["per_sample"]["index"]) == 4
    assert not state.exists(), "the state of a saved run is removed"


def test_write_error_in_library_is_output_error(tmp_path, monkeypatch):
    _failing_replace(monkeypatch, "x.txt")
    with pytest.raises(lio.OutputError, match="no space left on the device"):
        lio.write_text(tmp_path / "x.txt", "x")
    with pytest.raises(lio.OutputError, match="is a directory"):
        lio.write_text(tmp_path, "x")


# --------------------------------------------------------------------------- interrupted reruns


def _interrupt_after(monkeypatch, calls: int):
    """Ctrl-C inside the (calls+1)-th batch of a curvature run."""
    from lcnn_audit.geometry import audit

    real, seen = audit.compute_geometry, []

    def compute(*a, **k):
        seen.append(1)
        if len(seen) > calls:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(audit, "compute_geometry", compute)


def test_interrupted_rerun_never_replaces_a_complete_result(tmp_path, monkeypatch):
    out, rows = tmp_path / "r.json", tmp_path / "r.csv"
    res = invoke("curvature", "demo", *FAST, "--json", out, "--csv", rows)
    assert res.exit_code == 0, res.output
    complete_json, complete_csv = out.read_bytes(), rows.read_bytes()
    _interrupt_after(monkeypatch, 1)
    res = invoke("curvature", "demo", *FAST, "--json", out, "--csv", rows)  # a rerun, not --resume
    assert res.exit_code == 130, res.output
    assert out.read_bytes() == complete_json and rows.read_bytes() == complete_csv
    partial = json.loads((tmp_path / "r.incomplete.json").read_text())
    assert partial["complete"] is False and len(partial["per_sample"]["index"]) == 2
    assert (tmp_path / "r.incomplete.csv").is_file()
    assert "holds a complete result and is kept" in flat(res.output)
    monkeypatch.undo()
    res = invoke("curvature", "demo", *FAST, "--json", out, "--csv", rows, "--resume")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["complete"]
    assert not (tmp_path / "r.incomplete.json").exists() and not (tmp_path / "r.incomplete.csv").exists()
    assert not (tmp_path / "r.json.partial").exists()


def test_interrupted_first_run_writes_its_partial_result_in_place(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    _interrupt_after(monkeypatch, 1)
    assert invoke("curvature", "demo", *FAST, "--json", out).exit_code == 130
    assert json.loads(out.read_text())["complete"] is False
    _interrupt_after(monkeypatch, 0)  # interrupted again: an incomplete result may be replaced
    assert invoke("curvature", "demo", *FAST, "--json", out, "--resume").exit_code == 130
    assert json.loads(out.read_text())["complete"] is False and not (tmp_path / "r.incomplete.json").exists()


# --------------------------------------------------------------------------- resume state files


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[1, 2]", b'{"fingerprint": 1}',
                                     b'{"fingerprint": "x", "done": "3", "per_sample": {}}',
                                     b'{"fingerprint": "x", "done": 3, "per_sample": {"a": 5}}'])
def test_broken_resume_state_is_one_line_error(tmp_path, content):
    out = tmp_path / "r.json"
    (tmp_path / "r.json.partial").write_bytes(content)
    one_line_error(invoke("curvature", "demo", *FAST, "--json", out, "--resume"), "resume state")


@pytest.mark.parametrize("done,index", [(99, [0]), (2, [0, 1, 2]), (-1, [])])
def test_resume_state_that_does_not_fit_the_data_is_refused(tmp_path, monkeypatch, done, index):
    out, state = tmp_path / "r.json", tmp_path / "r.json.partial"
    _interrupt_after(monkeypatch, 1)
    assert invoke("curvature", "demo", *FAST, "--json", out).exit_code == 130
    monkeypatch.undo()
    saved = json.loads(state.read_text())  # the real fingerprint: only done/per_sample are wrong
    saved.update(done=done, per_sample={"index": index})
    state.write_text(json.dumps(saved))
    one_line_error(invoke("curvature", "demo", *FAST, "--json", out, "--resume"), "does not match this data")


# --------------------------------------------------------------------------- --save-adv


def test_save_adv_never_follows_a_partial_symlink(tmp_path, no_compute):
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("000000000000.safetensors", "precious.safetensors"):
        (victim / name).write_bytes(b"keep me")
    out = tmp_path / "adv.safetensors"
    (tmp_path / "adv.safetensors.partial").symlink_to(victim, target_is_directory=True)
    one_line_error(invoke("attack", "demo", "--save-adv", out), "symbolic link")
    assert sorted(p.name for p in victim.iterdir()) == ["000000000000.safetensors", "precious.safetensors"]
    store = AdvStore(out)
    for call in (store.reset, lambda: store.merge(__import__("torch").arange(2), {})):
        with pytest.raises(lio.OutputError, match="symbolic link"):
            call()
    assert all((victim / n).read_bytes() == b"keep me" for n in ("000000000000.safetensors", "precious.safetensors"))


def test_save_adv_reset_removes_only_shards(tmp_path):
    import torch

    store = AdvStore(tmp_path / "adv.safetensors")
    store.write({"index": torch.arange(3), "x": torch.zeros(3, 2)})
    (store.dir / "notes.safetensors").write_bytes(b"not a shard")
    (store.dir / "readme.txt").write_text("x")
    store.reset()
    assert sorted(p.name for p in store.dir.iterdir()) == ["notes.safetensors", "readme.txt"]
    store.write({"index": torch.arange(3), "x": torch.zeros(3, 2)})
    store.merge(torch.arange(3), {})
    assert (tmp_path / "adv.safetensors").is_file()
    assert sorted(p.name for p in store.dir.iterdir()) == ["notes.safetensors", "readme.txt"], \
        "only the shards are removed, and a folder that holds other files stays"


# --------------------------------------------------------------------------- image and model formats


@pytest.mark.parametrize("ext,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml"),
                                       (".jpg", b"\xff\xd8\xff")])
def test_plots_are_written_in_their_extensions_format(tmp_path, ext, magic):
    from lcnn_audit.plots import histogram_figure

    out = histogram_figure([("a", [1.0, 2.0, 3.0])], tmp_path / f"h{ext}", "x")
    data = out.read_bytes()
    assert data.startswith(magic), data[:16]
    if ext == ".svg":
        assert b"<svg" in data[:1000]


@pytest.mark.slow
def test_grad_robustness_plot_pdf_and_svg(tmp_path):
    for ext, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml")):
        out = tmp_path / f"g{ext}"
        res = invoke("grad-robustness", "demo", "--n", "2", "--radii", "0.01,0.1", "--draws", "1", "--plot", out)
        assert res.exit_code == 0, res.output
        assert out.read_bytes().startswith(magic)


# --------------------------------------------------------------------------- signals and click errors


def _run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    from lcnn_audit import cli

    monkeypatch.setattr(sys, "argv", ["lcnn-audit", *args])
    rc = cli._run(signal)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.mark.parametrize("args,words", [
    (["curvature", "demo", "--batch-size", "0"], ["--batch-size"]),
    (["curvature", "demo", "--batch-size", "many"], ["--batch-size", "integer"]),
    (["attack", "demo", "--steps", "0"], ["--steps"]),
    (["curvature", "demo", "--no-such-option"], ["no such option"]),
    (["attack", "demo", "--norm"], ["--norm", "requires an argument"]),
    (["report", "r.json"], ["missing option", "--output"]),
    (["gate"], ["missing argument", "POLICY.yaml"]),
    (["frobnicate"], ["no such command"]),
])
def test_click_usage_errors_are_one_line(monkeypatch, capsys, args, words):
    rc, out = _run_cli(args, monkeypatch, capsys)
    assert rc == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Usage:" not in out, out
    for w in words:
        assert w in out, (w, out)


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lcnn_audit", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_saves_the_state_and_exits_143(tmp_path):
    out = tmp_path / "r.json"
    proc = _spawn(["curvature", "demo", "--n", "400", "--batch-size", "4", "--device", "cpu", "--json", str(out)],
                  tmp_path)
    state = tmp_path / "r.json.partial"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert state.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted" in err
    assert json.loads(out.read_text())["complete"] is False
    assert json.loads(state.read_text())["done"] > 0


@pytest.mark.slow
def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    proc = _spawn(["curvature", "demo", "--n", "8", "--json", str(tmp_path / "r.json")], tmp_path)
    time.sleep(1.0)  # past interpreter start-up, while torch is imported or the model loaded
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].strip() == "interrupted"


def test_ctrl_c_while_the_commands_are_imported(monkeypatch, capsys):
    """Deterministic form of the start-up case: KeyboardInterrupt inside ``import ._app``."""
    import importlib.abc

    from lcnn_audit import cli

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "lcnn_audit.cli._app":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "lcnn_audit.cli._app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", ["lcnn-audit", "curvature", "demo"])
    assert cli._run(signal) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_an_output_folder_that_refuses_files_is_refused_before_running(tmp_path, monkeypatch):
    """os.access says yes for root and on read-only mounts: the folder is probed by creating a file."""
    import tempfile as tf

    from lcnn_audit.errors import OutputError
    from lcnn_audit.io import check_outputs

    def refuse(*a, **kw):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tf, "TemporaryFile", refuse)
    with pytest.raises(OutputError, match="Read-only file system"):
        check_outputs({"--json": tmp_path / "r.json"})
