"""Model registry: create_model(name, **config). One line here plugs in a new architecture."""

from __future__ import annotations

from ..errors import InputError

# name -> (fixed keyword arguments of SkeletonNet, one-line description)
ARCHITECTURES = {
    "drsn-cw": ({"shrink": "cw", "residual": True}, "DRSN with channel-wise thresholds (paper's best)"),
    "drsn-cs": ({"shrink": "cs", "residual": True}, "DRSN with one channel-shared threshold per sample"),
    "resnet": ({"shrink": None, "residual": True}, "pre-activation ResNet baseline, same skeleton"),
    "convnet": ({"shrink": None, "residual": False}, "plain ConvNet baseline, same skeleton"),
}
CONFIG_KEYS = ("classes", "width", "depth", "stages", "base_channels", "in_channels", "kernel")


def create_model(name: str, **config):
    """Build a registered model. `config` may hold any of CONFIG_KEYS."""
    from .networks import SkeletonNet

    if name not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{name}'; choose one of {', '.join(ARCHITECTURES)}")
    bad = sorted(set(config) - set(CONFIG_KEYS))
    if bad:
        raise InputError(f"unknown model option(s) {bad} for '{name}'; known: {', '.join(CONFIG_KEYS)}")
    fixed, _ = ARCHITECTURES[name]
    try:
        model = SkeletonNet(**config, **fixed)
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad model config for '{name}': {exc}") from exc
    model.arch = name
    model.config = dict(config)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, length: int = 2048) -> int:
    """Multiply-accumulates of the convolution and linear layers for one window."""
    import torch

    macs = 0
    hooks = []

    def conv_hook(mod, inp, out):
        nonlocal macs
        macs += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * mod.kernel_size[0]

    def lin_hook(mod, inp, out):
        nonlocal macs
        macs += mod.in_features * mod.out_features

    for m in model.modules():
        if isinstance(m, torch.nn.Conv1d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, model.stem.in_channels, length))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return macs
