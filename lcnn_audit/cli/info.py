"""``lcnn-audit info``: what a checkpoint and a dataset look like to lcnn-audit."""

from . import app
from . import options as o
from .common import Ctx, command


@app.command()
def info(
    checkpoint: o.Checkpoint = None,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    data: o.Data = "demo", data_root: o.DataRoot = None, split: o.Split = "test", single_split: o.SingleSplit = False,
    n: o.N = None, seed: o.Seed = 0, batch_size: o.BatchSize = 128, download: o.Download = False,
    device: o.Device = "auto",
    quiet: o.Quiet = False, verbose: o.Verbose = False, threads: o.Threads = None,
) -> None:
    """Load a model and data as every command would, and describe them (a dry run)."""
    ctx = Ctx.of(locals())
    with command(ctx, locals(), check_outputs=False):
        _info(ctx)


def _info(ctx: Ctx) -> None:
    import torch

    from ..errors import ModelError
    from ..independence import check_batch_independence
    from ..model.wrapper import check_model_data, model_device

    model = ctx.load_model()
    data = ctx.load_data()
    first = data.get(torch.arange(min(len(data), 8)))
    dev = model_device(model)
    classes = check_model_data(model, first.x.to(dev), data.labels)
    try:
        random_note = check_batch_independence(model, first.x[:2].to(dev))
    except ModelError as err:  # info describes; the audits refuse such a model
        random_note = f"{err}; curvature, grad-robustness, discrepancy and attack refuse it"
    n_params = sum(p.numel() for p in model.parameters())
    ctx.print(f"model: {ctx.checkpoint_path} ({model.recipe.get('kind')}, {n_params:,} parameters, "
              f"{classes} classes, arch {model.recipe.get('arch', 'embedded')})")
    ctx.print(f"normalisation: {model.recipe.get('normalize') or 'none'}")
    if random_note:
        ctx.notice(random_note)
    else:
        ctx.print("batch independence: checked (a sample's logits do not depend on the rest of its batch)")
    d = data.describe()
    ctx.print(f"data: {d['data']} [{d['split']}] {d['n']} samples of shape {tuple(d['input_shape'])} "
              f"from {d['source']}")
