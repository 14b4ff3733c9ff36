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
    if res.get("domain"):
        lines += domain_lines(res["domain"])
    lines += ["", f"Windows: {res['n']} ({res['data']}).", ""]
    return "\n".join(lines)


def domain_source(dom: dict) -> str:
    """Where a check's out-of-domain share was measured, in words."""
    if dom.get("measured_on") == "artifact":
        return f"on the artifact ({dom['runtime']})" if dom.get("runtime") else "on the artifact"
    return "by the float model's guard on the host (the artifact carries none)"


def domain_lines(dom: dict) -> list[str]:
    lines = ["", "## Domain guard", "",
             f"- out of domain: {100 * dom['out_of_domain_share']:.2f} % of the windows, measured {domain_source(dom)}"]
    fg = dom.get("float_guard")
    if fg:
        lines.append(f"- flags equal to the float model's guard: {100 * fg['flag_agreement']:.2f} % "
                     f"({100 * fg['flag_agreement_far_from_threshold']:.2f} % away from the threshold)")
    return lines


CHECK_REPORT = ("check.json", "check.md", "latency.png")


def write_report(res: dict, folder: str | Path, latencies) -> dict:
    title = f"{res['target']} · {res['runtime']}"
    paths = commit_files(folder, {
        "check.json": lambda p: write_json(p, res), "check.md": lambda p: write_bytes(p, markdown(res).encode()),
        "latency.png": lambda p: latency_plot(latencies, p, title)})
    return {"json": paths["check.json"], "markdown": paths["check.md"], "plot": paths["latency.png"]}


def report_names(stem: str) -> tuple[str, str, str]:
    return f"{stem}.json", f"{stem}.md", f"{stem}.png"


def write_report_files(folder, stem: str, doc: dict, markdown_text: str, figure) -> dict:
    """`<stem>.json`, `<stem>.md` and `<stem>.png` (drawn by `figure(path)`) in `folder`; their paths."""
    j, m, png = report_names(stem)
    paths = commit_files(folder, {j: lambda p: write_json(p, doc), m: lambda p: write_bytes(p, markdown_text.encode()),
                                  png: lambda p: figure(Path(p))})
    return {"json": paths[j], "markdown": paths[m], "plot": paths[png]}


def commit_files(folder, writers: dict) -> dict:
    """Write every file (`writers[name](path)`) into a hidden staging folder inside `folder`, then move them
    all in place together: a failure or an interrupt leaves none of them half-written or missing."""
    import os

    from .fileio import private_tmpdir
    from .interrupts import deferred

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with private_tmpdir(folder / sorted(writers)[0]) as stage:
        for name, write in writers.items():
            write(stage / name)
        with deferred():
            for name in writers:
                os.replace(stage / name, folder / name)
    return {name: str(folder / name) for name in writers}
