"""The library functions under the CLI (``lcnn_audit/audits/``): options that name their
fields, the gate's YAML lines, ``grad-robustness --compare`` and the bound's input shape as
library calls, and the one ``PATH.partial`` convention."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest

from lcnn_audit.attacks.adv_store import AdvStore
from lcnn_audit.audits import bound, discrepancy, grad_robustness
from lcnn_audit.audits.discrepancy import DiscrepancyOptions
from lcnn_audit.cli.common import Ctx
from lcnn_audit.data import load_data
from lcnn_audit.errors import ConfigError, UsageError
from lcnn_audit.gates import BoundOptions, load_policy
from lcnn_audit.geometry import CurvatureOptions
from lcnn_audit.geometry.robustness import GradRobustnessOptions, model_summaries
from lcnn_audit.io import partial_path
from lcnn_audit.loading import load_model
from lcnn_audit.options import OptionsError, flag_label
from lcnn_audit.runner import part_state_path, state_files
from tests.gate_helpers import invoke

# --------------------------------------------------------------------------- options


def test_library_messages_name_fields_and_the_cli_renders_flags():
    with pytest.raises(OptionsError) as info:
        CurvatureOptions(tol=2, max_iter=0, method="magic").validate()
    assert str(info.value) == ("unknown method 'magic'; use one of auto, lanczos, power, reference, gauss-newton; "
                               "tol must lie in (0, 1), got 2; max_iter must be at least 1, got 0")
    assert info.value.render(flag_label).startswith("unknown --method 'magic'; ")
    opts = GradRobustnessOptions(draws=0, curvature=CurvatureOptions(max_iter=0))
    assert [p.field for p in opts.problems()] == ["draws", "curvature.max_iter"]
    with pytest.raises(OptionsError) as info:
        opts.validate()
    assert info.value.render(flag_label) == "--draws must be at least 1; --max-iter must be at least 1, got 0"
    assert [p.field for p in DiscrepancyOptions(curvature=CurvatureOptions(eps=-1)).problems()] == ["curvature.eps"]
    assert CurvatureOptions().problems() == [] and GradRobustnessOptions().problems() == []


def test_a_value_with_braces_is_shown_as_typed():
    with pytest.raises(OptionsError, match=r"unknown method '\{0\}'"):
        CurvatureOptions(method="{0}").validate()
    res = invoke("curvature", "demo", "--method", "{x}")
    assert res.exit_code == 2 and "unknown --method '{x}'" in " ".join(res.output.split())


POLICY = """\
model: {checkpoint: demo}
data: {name: demo}
audits:
  curvature:
    max_iter: 10
    tol: 2
  grad_robustness: {curvature: {method: magic}}
checks:
  - {metric: curvature.curvature.mean, max: 1}
"""


def test_the_gate_names_policy_keys_at_their_own_lines(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with pytest.raises(ConfigError) as info:
        load_policy(policy)
    assert info.value.problems == [
        "audits.curvature (line 6): tol must lie in (0, 1), got 2.0",  # the line of tol, not of curvature
        "audits.grad_robustness.curvature (line 7): unknown method 'magic'; use one of auto, lanczos, power, "
        "reference, gauss-newton"]


# --------------------------------------------------------------------------- library functions


def test_compare_is_the_cli_loop_as_a_library_call():
    data = load_data("demo", n=3)
    model = load_model("demo", device="cpu")
    opts = GradRobustnessOptions(radii=(0.01, 0.1), draws=1, curvature=CurvatureOptions(max_iter=5))
    one = grad_robustness.run(model, data, opts, config={"checkpoint": "demo"})
    names = []

    def progress(name):
        names.append(name)
        return nullcontext(None)

    both = grad_robustness.compare(((n, model) for n in ("demo", "other.safetensors")), data, opts,
                                   progress=progress)
    assert names == ["demo", "other.safetensors"]
    got = model_summaries(both)
    assert [n for n, _ in got] == ["demo", "other"]
    assert got[0][1]["curves"] == got[1][1]["curves"] == one.summary["curves"]
    with pytest.raises(UsageError, match="at least one model"):
        grad_robustness.compare([], data, opts)


def test_the_bound_input_shape_has_one_rule():
    data = load_data("demo", n=1)
    assert bound.input_shape(BoundOptions(), data) == (1, 28, 28) == tuple(data.input_shape)
    assert bound.input_shape(BoundOptions(input_shape=(3, 8, 8)), data) == (3, 8, 8)
    assert bound.input_shape(BoundOptions(), None) is None
    assert bound.needs_data(BoundOptions()) and not bound.needs_data(BoundOptions(input_shape=(1, 28, 28)))
    res = bound.run(load_model("demo", device="cpu"), data, BoundOptions(tol=1e-3, max_iter=50))
    assert res.summary["input_shape"] == [1, 28, 28] and res.config["input_shape"] == [1, 28, 28]


def test_one_partial_path_convention(tmp_path):
    assert partial_path("out/r.json") == Path("out/r.json.partial")
    assert part_state_path(partial_path("out/r.json"), "train") == Path("out/r.json.partial.train")
    # the discrepancy keeps one state per split there, and the CLI's clean-up finds both
    state = partial_path(tmp_path / "r.json")
    data = load_data("demo", n=2)
    opts = DiscrepancyOptions(curvature=CurvatureOptions(max_iter=3, fro_probes=0, jacobian="off"))
    discrepancy.run(load_model("demo", device="cpu"), data, opts, train_data=load_data("demo", "train", n=2),
                    state_path=state, keep_state=True)
    assert sorted(f.name for f in state_files(state)) == ["r.json.partial.test", "r.json.partial.train"]
    assert Ctx({"json_path": Path("out/r.json")}).state_path == partial_path("out/r.json")
    assert AdvStore("out/adv.safetensors").dir == partial_path("out/adv.safetensors")
