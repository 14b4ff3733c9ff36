"""The deploy form of a trained skeleton network: what gets exported and compiled.

- 2-D layout: the [N, 1, L] input is viewed as [N, 1, 1, L] and every layer is its 2-D counterpart
  (kernel 1×k). TensorRT and TFLite handle 2-D convolution and pooling natively (TensorRT's parser
  documents pooling as 2-D/3-D only; TFLite converts 1-D layers with extra reshapes and transposes).
- BatchNorm folded: conv1 ← BN2, threshold fc1 ← its BN; the pre-activation BNs (BN1, the final BN)
  sit between a residual sum and a ReLU, so they become per-channel affines written as depthwise 1×1
  convolutions (quantized per channel like any conv).
- Threshold FCs as 1×1 convolutions on [N, C, 1, 1] (no reshapes inside the network).
- |x| = max(x, −x) and soft(x, τ) = relu(x − τ) − relu(−x − τ), sharing −x.
- Downsampling shortcut: average pooling of size 1, stride 2; extra channels by concatenating zeros.
- Domain-guard taps (`taps`, names as in drsn_edge/guard.py): extra outputs [N, C] after the logits, one per
  tap, in the order given: the head's pooled features, a shrinkage unit's mean |x| (the tensor its threshold
  branch computes anyway), the stem's mean |x| (one extra |x| and mean).
Outputs equal the trained model's (float rounding aside); export checks that on real windows.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _bn_scale_shift(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    s = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return s, bn.bias.detach() - bn.running_mean.detach() * s


def _conv2d(conv: nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    c = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                  padding=(0, conv.padding[0]), groups=conv.groups, bias=bias is not None)
    c.weight.data = weight.detach().unsqueeze(2).clone()
    if bias is not None:
        c.bias.data = bias.detach().clone()
    return c


def _affine(bn: nn.BatchNorm1d) -> nn.Conv2d:
    s, b = _bn_scale_shift(bn)
    n = s.numel()
    c = nn.Conv2d(n, n, 1, groups=n, bias=True)
    c.weight.data = s.view(-1, 1, 1, 1).clone()
    c.bias.data = b.clone()
    return c


def _fold_conv_bn(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> nn.Conv2d:
    s, b = _bn_scale_shift(bn)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(b)
    return _conv2d(conv, conv.weight.detach() * s.view(-1, 1, 1), bias * s + b)


def _linear_as_conv(lin: nn.Linear, bn: nn.BatchNorm1d | None = None) -> nn.Conv2d:
    w, b = lin.weight.detach(), lin.bias.detach()
    if bn is not None:
        s, sh = _bn_scale_shift(bn)
        w, b = w * s.view(-1, 1), b * s + sh
    c = nn.Conv2d(lin.in_features, lin.out_features, 1, bias=True)
    c.weight.data = w.view(w.shape[0], w.shape[1], 1, 1).clone()
    c.bias.data = b.clone()
    return c


class DeployThreshold(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.channel_wise = t.channel_wise
        self.fc1_bn = _linear_as_conv(t.fc1, t.bn)
        self.fc2 = _linear_as_conv(t.fc2)

    tap = None  # the last forward's mean |x| [N, C, 1, 1], read by DeployNet when this unit is a guard tap

    def forward(self, x: torch.Tensor, neg_x: torch.Tensor) -> torch.Tensor:
        g = torch.maximum(x, neg_x).mean(dim=3, keepdim=True)  # mean |x| per channel, [N, C, 1, 1]
        self.tap = g
        alpha = torch.sigmoid(self.fc2(F.relu(self.fc1_bn(g))))
        tau = alpha * (g if self.channel_wise else g.mean(dim=1, keepdim=True))
        return F.relu(x - tau) - F.relu(neg_x - tau)


class DeployUnit(nn.Module):
    def __init__(self, u, batch: int, length_out: int):
        super().__init__()
        self.bn1_affine = _affine(u.bn1)
        self.conv1_bn2 = _fold_conv_bn(u.conv1, u.bn2)
        self.conv2 = _conv2d(u.conv2, u.conv2.weight, u.conv2.bias)
        self.shrink = DeployThreshold(u.threshold) if u.threshold is not None else None
        self.residual = u.residual
        self.pool = nn.AvgPool2d((1, 1), stride=(1, u.stride)) if u.stride > 1 else None
        extra = u.extra_channels
        self.register_buffer("zeros", torch.zeros(batch, extra, 1, length_out) if extra else None, persistent=False)
        self.add_fq = None  # quantization-aware training: fake quantizers for (residual, shortcut, sum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1_bn2(F.relu(self.bn1_affine(x)))))
        if self.shrink is not None:
            r = self.shrink(r, -r)
        if not self.residual:
            return r
        s = self.pool(x) if self.pool is not None else x
        if self.zeros is not None:
            z = self.zeros if self.zeros.shape[0] == s.shape[0] else self.zeros[:1].expand(s.shape[0], -1, -1, -1)
            s = torch.cat([s, z], dim=1)
        if self.add_fq is not None:
            return self.add_fq[2](self.add_fq[0](r) + self.add_fq[1](s))
        return r + s


class GuardTaps(nn.Module):
    """The domain guard's feature taps (drsn_edge.guard), a module of its own so that exported graphs name
    its ops `/guard/…` (profiles charge them to the guard, not to the stem or the head)."""

    def forward(self, taps, stem: torch.Tensor, pooled: torch.Tensor, units) -> list[torch.Tensor]:
        return [self._tap(t, stem, pooled, units) for t in taps]

    @staticmethod
    def absmean(y: torch.Tensor) -> torch.Tensor:
        """mean |y| per channel of [N, C, 1, L] as [N, C] (|y| as maximum(y, −y))."""
        return torch.maximum(y, -y).mean(dim=(2, 3))

    def _tap(self, name: str, stem: torch.Tensor, pooled: torch.Tensor, units) -> torch.Tensor:
        if name == "head":
            return pooled
        if name == "stem.absmean":
            return self.absmean(stem)
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "units" and parts[1].isdigit() and int(parts[1]) < len(units):
            shrink = units[int(parts[1])].shrink
            if shrink is not None and shrink.tap is not None:
                return shrink.tap.flatten(1)
        raise ValueError(f"unknown guard tap '{name}'")


class DeployNet(nn.Module):
    """Deploy form for a static input shape [batch, 1, window]."""

    def __init__(self, model, batch: int, window: int, taps=()):
        super().__init__()
        self.taps = list(taps)
        model = model.eval()
        st = model.stem
        self.stem = _conv2d(st, st.weight, st.bias)
        length = (window + 2 * st.padding[0] - st.kernel_size[0]) // st.stride[0] + 1
        units = []
        for u in model.units:
            k, s, p = u.conv1.kernel_size[0], u.conv1.stride[0], u.conv1.padding[0]
            length = (length + 2 * p - k) // s + 1
            units.append(DeployUnit(u, batch, length))
        self.units = nn.Sequential(*units)
        self.head_bn_affine = _affine(model.bn)
        self.fc = nn.Linear(model.fc.in_features, model.fc.out_features)
        self.fc.load_state_dict(model.fc.state_dict())
        self.guard = GuardTaps()
        self.batch, self.window = batch, window
        self.eval()

    def set_batch(self, batch: int) -> "DeployNet":
        """Resize the static zero-channel constants for another batch size."""
        for u in self.units:
            if u.zeros is not None:
                u.zeros = torch.zeros((batch,) + tuple(u.zeros.shape[1:]))
        self.batch = batch
        return self

    def forward(self, x: torch.Tensor):
        s = self.stem(x.unsqueeze(2))
        y = self.units(s)
        pooled = F.relu(self.head_bn_affine(y)).mean(dim=(2, 3))
        logits = self.fc(pooled)
        if not self.taps:
            return logits
        return (logits, *self.guard(self.taps, s, pooled, self.units))
