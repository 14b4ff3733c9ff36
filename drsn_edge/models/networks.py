"""DRSN-CS, DRSN-CW and the ResNet / ConvNet baselines on one skeleton (paper Table II):

input 1×L → Conv(c, 3, /2) → stage(c) → stage(2c) → stage(4c) → BN → ReLU → GAP → FC(classes)
each stage: one unit with stride 2, then depth−1 units with stride 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResidualUnit


class SkeletonNet(nn.Module):
    def __init__(self, classes: int = 10, width: float = 1.0, depth: int = 4, stages: int = 3,
                 base_channels: int = 4, in_channels: int = 1, shrink: str | None = "cw",
                 residual: bool = True, kernel: int = 3):
        super().__init__()
        if classes < 2:
            raise ValueError("a classifier needs at least 2 classes")
        if depth < 1 or stages < 1:
            raise ValueError("depth and stages must be at least 1")
        c = max(1, int(round(base_channels * width)))
        self.stem = nn.Conv1d(in_channels, c, kernel, stride=2, padding=kernel // 2, bias=False)
        units = []
        c_in = c
        for s in range(stages):
            c_out = c * (2**s)
            for u in range(depth):
                units.append(ResidualUnit(c_in, c_out, stride=2 if u == 0 else 1, shrink=shrink,
                                          residual=residual, kernel=kernel))
                c_in = c_out
        self.units = nn.Sequential(*units)
        self.bn = nn.BatchNorm1d(c_in)
        self.fc = nn.Linear(c_in, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.units(self.stem(x)))).mean(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
