"""Reports of on-device checks: JSON for machines, Markdown for people, a latency plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_path, write_bytes, write_json


def latency_summary(lat_ms) -> dict:
    a = np.asarray(lat_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None, "n": 0}
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean()), "n": int(a.size)}


def latency_plot(lat_ms, path: Path, title: str) -> Path:
    from .deps import pyplot

    plt = pyplot()
    a = np.sort(np.asarray(lat_ms, dtype=np.float64))
    fig, (h, c) = plt.subplots(1, 2, figsize=(11, 4))
    h.hist(a, bins=min(60, max(10, a.size // 10)), color="tab:blue")
    h.set_xlabel("latency per inference (ms)")
    h.set_ylabel("count")
    h.set_title("histogram")
    c.plot(a, np.arange(1, a.size + 1) / a.size * 100, color="tab:orange")
    for q in (50, 90, 99):
        c.axvline(np.percentile(a, q), ls="--", color="gray")
        c.text(np.percentile(a, q), 5 + q * 0.3, f"p{q}", rotation=90, fontsize=8)
    c.set_xlabel("latency (ms)")
    c.set_ylabel("cumulative %")
    c.set_title("distribution")
    c.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def markdown(res: dict) -> str:
    lat = res["latency_ms"]
    lines = [
        f"# drsn-edge check: {res['target']} ({res['runtime']})",
        "",
        f"- device: `{res['device']}`",
        f"- artifact: `{res.get('artifact')}`",
        f"- verdict: **{'PASSED' if res['passed'] else 'FAILED'}**" + (f" — {'; '.join(res['failures'])}" if res["failures"] else ""),
        "",
        "| metric | value | threshold |",
        "|---|---|---|",
        f"| accuracy | {100 * res['accuracy']:.2f} % | ≥ {100 * res['thresholds']['min_accuracy']:.1f} % |",
        f"| reference (ONNX Runtime float) accuracy | {100 * res['reference_accuracy']:.2f} % | |",
        f"| accuracy drop | {res['accuracy_drop_pp']:.2f} pp | ≤ {res['thresholds']['max_drop_pp']:.2f} pp |",
        f"| top-1 agreement with reference | {100 * res['agreement_with_reference']:.2f} % | |",
        f"| max abs diff of logits | {res['max_abs_diff']:.4g} | |",
        f"| output SQNR | {res['sqnr_db']:.1f} dB | |",
        f"| latency p50 / p90 / p99 / max | {lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} / {lat['max']:.3f} ms"
        f" | p99 ≤ {res['thresholds']['max_latency_ms']:g} ms |",
        f"| throughput (batch 1) | {res['throughput']['batch1_per_s']:.1f} windows/s | |",
        "",
        "## Throughput by batch size",
        "",
        "| batch | windows/s |",
        "|---|---|",
    ]
    for b, v in res["throughput"].get("sweep", {}).items():
        lines.append(f"| {b} | {v:.1f} |")
    if res.get("memory"):
        lines += ["", "## Memory", ""] + [f"- {k}: {v}" for k, v in res["memory"].items()]
    lines += ["", f"Windows: {res['n']} ({res['data']}).", ""]
    return "\n".join(lines)


def write_report(res: dict, folder: str | Path, latencies) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "check.json", res)
    write_bytes(folder / "check.md", markdown(res).encode())
    latency_plot(latencies, folder / "latency.png", f"{res['target']} · {res['runtime']}")
    return {"json": str(folder / "check.json"), "markdown": str(folder / "check.md"), "plot": str(folder / "latency.png")}


def write_report_files(folder, stem: str, doc: dict, markdown_text: str, figure) -> dict:
    """`<stem>.json`, `<stem>.md` and `<stem>.png` (drawn by `figure(path)`) in `folder`; their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"json": str(folder / f"{stem}.json"), "markdown": str(folder / f"{stem}.md"),
             "plot": str(folder / f"{stem}.png")}
    write_json(files["json"], doc)
    write_bytes(files["markdown"], markdown_text.encode())
    figure(Path(files["plot"]))
    return files
