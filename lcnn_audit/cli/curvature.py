"""``lcnn-audit curvature``: per-sample input gradient, Hessian and curvature."""

from pathlib import Path

from ..geometry.options import CurvatureOptions
from . import app
from . import options as o
from .common import Ctx, command
from .options import CURVATURE as C
from .render import fmt, stats_table

FIELDS = ["grad_norm", "hessian_norm", "curvature", "alignment", "hessian_fro", "fd_curvature", "jacobian_fro",
          "cross_lipschitz", "iterations"]


@app.command()
def curvature(
    checkpoint: o.Checkpoint = None,
    target: o.CurvatureTarget = C.target,
    label: o.CurvatureLabel = C.label,
    method: o.CurvatureMethod = C.method,
    tol: o.CurvatureTol = C.tol,
    atol: o.CurvatureAtol = C.atol,
    max_iter: o.CurvatureMaxIter = C.max_iter,
    iters: o.CurvatureIters = C.iters,
    profile: o.CurvatureProfile = C.profile,
    fd_h: o.CurvatureFdH = C.fd_h,
    eps: o.CurvatureEps = C.eps,
    fro_probes: o.CurvatureFroProbes = C.fro_probes,
    jacobian: o.CurvatureJacobian = C.jacobian,
    smooth_relu: o.CurvatureSmoothRelu = C.smooth_relu,
    dtype: o.CurvatureDtype = C.dtype,
    examples: o.CurvatureExamples = o.CURVATURE_EXAMPLES,
    save_images: o.SaveImages = None,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    data: o.Data = "demo", data_root: o.DataRoot = None, split: o.Split = "test", single_split: o.SingleSplit = False,
    n: o.N = None, seed: o.Seed = C.seed, batch_size: o.BatchSize = 128, download: o.Download = False,
    device: o.Device = "auto",
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    resume: o.Resume = False, threads: o.Threads = None,
) -> None:
    """Per-sample ‖∇f‖, ‖∇²f‖₂ and normalised curvature C = ‖∇²f‖₂/(‖∇f‖₂+ε) (LCNN §3.1)."""
    ctx = Ctx.of(locals())
    with command(ctx, locals()):
        _curvature(ctx, CurvatureOptions(
            target=target, label=label, method=method, tol=tol, atol=atol, max_iter=max_iter, iters=iters,
            profile=profile, fd_h=fd_h, eps=eps, fro_probes=fro_probes, jacobian=jacobian, smooth_relu=smooth_relu,
            dtype=dtype, seed=seed), examples, save_images)


def _curvature(ctx: Ctx, opts: CurvatureOptions, examples: int, save_images: Path | None) -> None:
    from ..audits import curvature as audit

    opts.validate()
    check_image_dir(save_images, examples)
    model = ctx.load_model()
    data = ctx.load_data()
    with ctx.progress("curvature") as bar:
        result = audit.run(model, data, opts, batch_size=ctx.batch_size, progress=bar,
                           config={"model": model.recipe, "checkpoint": ctx.checkpoint_path}, **ctx.run_kwargs)
    ex = audit.add_examples(model, data, result, examples, opts) if examples else None
    if ex is not None and save_images is not None:
        from ..plots import examples_figure

        save_images.mkdir(parents=True, exist_ok=True)
        ctx.print(f"wrote {examples_figure(ex, save_images / 'curvature_most_curved.png')}")
    render_curvature(ctx, result)
    ctx.finish(result)


def check_image_dir(path: Path | None, examples: int) -> None:
    """--save-images DIR: a directory (or a new path) and examples to draw, checked before any work."""
    from ..errors import UsageError

    if path is None:
        return
    if examples < 1:
        raise UsageError("--save-images needs --examples K with K >= 1")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--save-images {path} is a file; give a directory")


def render_curvature(ctx: Ctx, result) -> None:
    """Print the curvature audit's statistics table and its notices."""
    for note in result.summary.get("notices", []):
        ctx.notice(note)
    s = result.summary
    ctx.print(stats_table(result, FIELDS, f"curvature audit: {s['n']} samples, method {s['method']}, "
                                         f"accuracy {fmt(s.get('accuracy'))}"))
    if s.get("not_converged"):
        ctx.notice(f"{s['not_converged']} sample(s) did not converge within --max-iter (marked converged: false)")


def curvature_options(ctx: Ctx, **kw):
    """CurvatureOptions at their defaults, seeded from --seed, with ``kw`` overrides."""
    return CurvatureOptions(seed=ctx.seed, **kw)
