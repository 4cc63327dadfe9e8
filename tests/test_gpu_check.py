"""benchmarks/gpu_check.sh runs end to end on the CPU (``--device cpu --quick``), so the GPU pass cannot rot."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "gpu.json"
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick",
                          "--json", str(out)], capture_output=True, text=True, env=env, timeout=240,
                         )
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert [a["pass"] for a in r["a_agreement"]] == [True, True]
    # fp32 against fp64 is a real comparison even on the CPU: errors are small but not zero
    for a in r["a_agreement"]:
        assert 0 < a["max_rel_error"]["hessian_norm"] < 1e-2
    assert r["b_batched_vs_loop"]["speedup"] > 0
    assert {"ReLU exact", "softplus β=1000"} <= set(r["b_curvature_resnet18"])
    assert r["b_curvature_resnet18"]["ReLU exact"]["method"] == "gauss-newton"
    assert r["b_curvature_resnet18"]["softplus β=1000"]["method"] == "lanczos"
    assert {"demo CNN", "ResNet-18"} <= set(r["b_pgd"])
    assert len(r["c_batch_sizes"]) == 3
    table = res.stdout[res.stdout.index("| check | result |"):]
    assert table.count("\n|") >= 12 and "(a)" in table and "(c)" in table
