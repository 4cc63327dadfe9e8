"""A 2-process gloo run launched through torchrun gives the same per-sample JSON as 1 process."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run(tmp_path, nproc: int, name: str, *args) -> dict:
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(29500 + nproc + hash(name) % 200), "-m", "lcnn_audit", *args, "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LCNN_AUDIT_DIST_BACKEND": "gloo"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("command", [
    ["curvature", "demo", "--data", "demo", "--num-samples", "40", "--batch-size", "8", "--device", "cpu",
     "--smooth-relu", "50", "--max-iter", "8", "--fro-probes", "2"],
    ["grad-robustness", "demo", "--num-samples", "12", "--batch-size", "4", "--device", "cpu", "--radii", "0.01,0.1",
     "--draws", "2"],
])
def test_torchrun_two_processes_match_one(tmp_path, command):
    one = run(tmp_path, 1, "one" + command[0], *command)
    two = run(tmp_path, 2, "two" + command[0], *command)
    assert two["per_sample"] == one["per_sample"]
    assert two["summary"] == one["summary"]
