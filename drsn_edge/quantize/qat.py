"""Quantization-aware fine-tuning of the deploy form, with the quantization scheme of the export.

Fake quantizers sit exactly where ONNX Runtime's QDQ quantizer (configured in ptq.py) puts Q/DQ pairs:
the input and output of every convolution and the input of the final Gemm (symmetric per-tensor int8,
scale = amax/127.5 as ONNX Runtime computes it for a symmetric range), the weights of both (symmetric
per-channel int8 on the output axis, −127..127), and both inputs and the output of every residual Add.
Ranges are calibrated on the calibration set (min/max) and kept fixed; weights are fine-tuned for a few
epochs with straight-through gradients and the training noise augmentation, on the labels and on the
float model's softened outputs (distillation), since the aim is an int8 model that agrees with float. The fine-tuned deploy form
is then quantized by the normal post-training path, so the artifact is produced the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ActFakeQuant(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("amax", torch.tensor(0.0))
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.amax = torch.maximum(self.amax, x.detach().abs().max())
            return x
        if float(self.amax) <= 0:
            return x
        scale = float(self.amax) / 127.5
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127)


def _weight_fq(w: torch.Tensor) -> torch.Tensor:
    amax = w.detach().abs().flatten(1).max(dim=1).values.clamp_min(1e-12)
    scale = (amax / 127.0).float()
    return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127)


class QConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.fq_in, self.fq_out = conv, ActFakeQuant(), ActFakeQuant()

    def forward(self, x):
        c = self.conv
        y = F.conv2d(self.fq_in(x), _weight_fq(c.weight), c.bias, c.stride, c.padding, c.dilation, c.groups)
        return self.fq_out(y)


class QLinear(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin, self.fq_in = lin, ActFakeQuant()

    def forward(self, x):
        return F.linear(self.fq_in(x), _weight_fq(self.lin.weight), self.lin.bias)


def _swap(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            setattr(module, name, QConv2d(child))
        elif isinstance(child, nn.Linear):
            setattr(module, name, QLinear(child))
        else:
            _swap(child)


def _unswap(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, QConv2d):
            setattr(module, name, child.conv)
        elif isinstance(child, QLinear):
            setattr(module, name, child.lin)
        else:
            _unswap(child)


def prepare(deploy) -> nn.Module:
    """Insert fake quantizers into a DeployNet (in place) and return it."""
    from ..models.deploy import DeployUnit

    _swap(deploy)
    for m in deploy.modules():
        if isinstance(m, DeployUnit) and m.residual:
            m.add_fq = nn.ModuleList([ActFakeQuant(), ActFakeQuant(), ActFakeQuant()])
    return deploy


def strip(deploy) -> nn.Module:
    """Remove the fake quantizers (in place): a plain DeployNet with the fine-tuned weights."""
    from ..models.deploy import DeployUnit

    _unswap(deploy)
    for m in deploy.modules():
        if isinstance(m, DeployUnit):
            m.add_fq = None
    return deploy


def calibrate(deploy, x: np.ndarray, batch: int = 64) -> None:
    fqs = [m for m in deploy.modules() if isinstance(m, ActFakeQuant)]
    for m in fqs:
        m.calibrating = True
        m.amax.zero_()
    deploy.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            deploy(torch.from_numpy(x[i : i + batch]))
    for m in fqs:
        m.calibrating = False


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """Learning rate of fine-tuning epoch `epoch` (0-based): cosine decay from `lr` towards 0."""
    return lr * 0.5 * (1 + np.cos(np.pi * epoch / max(1, epochs)))


def finetune(model, window: int, calib_x: np.ndarray, train_x: np.ndarray, train_y: np.ndarray, epochs: int,
             normalization: str = "zscore", lr: float = 1e-3, batch: int = 128, seed: int = 0, progress=None):
    """Quantization-aware fine-tuning; returns the fine-tuned (fake quantizers removed) DeployNet."""
    from ..data.dataset import NOISE_TYPES, normalize
    from ..models.deploy import DeployNet
    from ..train import augment

    torch.manual_seed(seed)
    teacher = DeployNet(model, batch, window).eval()
    deploy = prepare(DeployNet(model, batch, window))
    calibrate(deploy, calib_x)
    opt = torch.optim.SGD(deploy.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    n = len(train_x)
    steps = max(1, n // batch)
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, 4242, epoch])
        order = rng.permutation(n)[: steps * batch]
        xa, _, _ = augment(train_x[order], rng, list(NOISE_TYPES), -5.0, 5.0, 0.2)
        xa = torch.from_numpy(normalize(xa, normalization))
        ya = torch.from_numpy(train_y[order])
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr, epoch, epochs)
        deploy.train()
        loss_sum = 0.0
        for s in range(steps):
            sl = slice(s * batch, (s + 1) * batch)
            logits = deploy(xa[sl])
            with torch.no_grad():
                soft = F.softmax(teacher(xa[sl]) / 2.0, dim=1)
            # labels plus distillation from the float model: the goal is int8 that agrees with float
            loss = 0.5 * F.cross_entropy(logits, ya[sl]) + 0.5 * 4.0 * F.kl_div(
                F.log_softmax(logits / 2.0, dim=1), soft, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
        if progress:
            progress(epoch + 1, epochs, loss_sum / steps)
    return strip(deploy).eval()
