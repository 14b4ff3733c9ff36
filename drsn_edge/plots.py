"""Figures people would rather look at than read: confusion matrix and accuracy-vs-SNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_path


def evaluation_figure(report: dict, path: str | Path, title: str = "") -> Path:
    plt = __import__("drsn_edge.deps", fromlist=["pyplot"]).pyplot()
    names = report["class_names"]
    conf = np.asarray(report["confusion"], dtype=np.float64)
    rows = conf.sum(axis=1, keepdims=True)
    frac = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    noisy = {k: v for k, v in report["per_snr"].items() if k != "none"}
    fig, axes = plt.subplots(1, 2 if noisy else 1, figsize=(13 if noisy else 6.5, 5.5), squeeze=False)
    ax = axes[0][0]
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion (row-normalized), accuracy {100 * report['accuracy']:.2f} %")
    for i in range(len(names)):
        for j in range(len(names)):
            if conf[i, j]:
                ax.text(j, i, f"{100 * frac[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if noisy:
        ax = axes[0][1]
        for kind, cells in sorted(noisy.items()):
            snrs = sorted(cells, key=float)
            ax.plot([float(s) for s in snrs], [100 * cells[s] for s in snrs], marker="o", label=kind)
        clean = report["per_snr"].get("none", {}).get("clean")
        if clean is not None:
            ax.axhline(100 * clean, color="gray", ls="--", label="clean")
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("accuracy vs SNR")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
