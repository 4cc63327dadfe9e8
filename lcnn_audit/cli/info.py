"""``lcnn-audit info``: what a checkpoint and a dataset look like to lcnn-audit."""

import torch

from . import app
from .common import Ctx, command_options


@app.command()
@command_options("model", "data", "verbosity")
def info(ctx: Ctx) -> None:
    """Load a model and data as every command would, and describe them (a dry run)."""
    from ..loading import check_model_data

    model = ctx.load_model()
    data = ctx.load_data()
    first = data.get(torch.arange(min(len(data), 8)))
    dev = next(model.parameters(), torch.empty(0)).device
    classes = check_model_data(model, first.x.to(dev), data.labels)
    n_params = sum(p.numel() for p in model.parameters())
    ctx.print(f"model: {ctx.checkpoint_path} ({model.recipe.get('kind')}, {n_params:,} parameters, "
              f"{classes} classes, arch {model.recipe.get('arch', 'embedded')})")
    ctx.print(f"normalisation: {model.recipe.get('normalize') or 'none'}")
    d = data.describe()
    ctx.print(f"data: {d['data']} [{d['split']}] {d['n']} samples of shape {tuple(d['input_shape'])} "
              f"from {d['source']}")
