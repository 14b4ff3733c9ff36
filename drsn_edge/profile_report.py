"""The `profile --report DIR` files: profile.json, profile.md and profile.png (the slowest layers, and one
stacked bar per block — stem, each residual unit, head — split into the shrinkage branch and the rest)."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_path


def _unit(res) -> tuple[str, str, str]:
    """(row key, axis label, block key of the shrinkage part) for a time or a counter profile."""
    if res.unit == "us":
        return "time_us", "µs", "shrinkage_us"
    return "instructions", res.unit, "shrinkage_instructions"


def profile_figure(res, path: Path, top: int = 15) -> Path:
    from .deps import pyplot

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.1, 1]})
    cost, label, shrink_key = _unit(res)
    layers = res.top(top)[::-1]
    a.barh([r["module"] for r in layers], [r[cost] for r in layers],
           color=["tab:red" if ".shrink" in r["module"] else "tab:blue" for r in layers])
    a.set_xlabel(f"{label} per inference")
    a.set_title(f"costliest {len(layers)} layers (red: shrinkage branch)")
    names = [g["block"] for g in res.blocks]
    shrink = [g[shrink_key] for g in res.blocks]
    rest = [g[cost] - g[shrink_key] for g in res.blocks]
    b.bar(names, rest, color="tab:blue", label="convolutions, affines, residual")
    b.bar(names, shrink, bottom=rest, color="tab:red", label="shrinkage (soft-threshold) branch")
    b.set_ylabel(f"{label} per inference")
    b.set_title(f"per block — shrinkage {100 * res.shrinkage_share:.0f} % of the {'op time' if cost == 'time_us' else label}")
    b.tick_params(axis="x", rotation=60)
    b.legend(fontsize=8)
    fig.suptitle(f"{res.target}: {res.runtime} — {res.method}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _counter_markdown(res) -> str:
    u, c = res.unit, res.counts
    lines = [f"# drsn-edge profile: {res.target} ({res.runtime})", "",
             f"- artifact: `{res.artifact}`", f"- method: {res.method}; {res.warmup} warm-up and {res.repeats} counted runs",
             f"- input: {res.input}",
             (f"- {u} per inference: {c['per_inference_unprofiled']:.0f} with the normal firmware, "
              f"{c['per_inference_profiled']:.0f} with the profiling firmware (markers: "
              f"{c['marker_overhead_per_inference']:.0f}); the kernels' rows sum to {c['kernels_sum']:.0f} "
              f"(outside the kernels {c['outside_kernels']:.0f}; tolerance ±{c['tolerance']:.0f}: {c['tolerance_reason']})"),
             f"- shrinkage branches: {100 * res.shrinkage_share:.1f} % of the kernels' {u}", "",
             "## Costliest kernels", "", f"| kernel | layer | block | op | MACs | {u} | share | {u}/MAC |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(res.rows, key=lambda r: -r["instructions"])[:15]:
        per = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] else ""
        lines.append(f"| {r['name']} | {r['module']} | {r['block']} | {r['op_type']} | {r['macs']} | "
                     f"{r['instructions']:.0f} | {100 * r['share']:.1f} % | {per} |")
    lines += ["", "## Blocks", "", f"| block | {u} | share | of it shrinkage |", "|---|---|---|---|"]
    lines += [f"| {g['block']} | {g['instructions']:.0f} | {100 * g['share']:.1f} % | {g['shrinkage_instructions']:.0f} |"
              for g in res.blocks]
    return "\n".join(lines) + "\n"


def profile_markdown(res) -> str:
    if res.unit != "us":
        return _counter_markdown(res)
    lines = [f"# drsn-edge profile: {res.target} ({res.runtime})", "",
             f"- artifact: `{res.artifact}`", f"- method: {res.method}; {res.warmup} warm-up and {res.repeats} timed runs",
             f"- input: {res.input}",
             (f"- wall-clock p50 (no profiler): {res.wall_p50_us:.1f} µs; sum of op rows {res.rows_total_us:.1f} µs; "
              f"profiled run {res.profiled_total_us:.1f} µs"),
             f"- shrinkage branches: {100 * res.shrinkage_share:.1f} % of the op time", "",
             "## Slowest layers", "", "| layer | block | ops | MACs | µs | share | MMAC/s |", "|---|---|---|---|---|---|---|"]
    for r in res.top(15):
        mps = f"{r['macs_per_s'] / 1e6:.0f}" if r["macs_per_s"] else ""
        lines.append(f"| {r['module']} | {r['block']} | {', '.join(r['op_types'])} | {r['macs']} | {r['time_us']:.1f} "
                     f"| {100 * r['share']:.1f} % | {mps} |")
    lines += ["", "## Blocks", "", "| block | µs | share | of it shrinkage µs |", "|---|---|---|---|"]
    lines += [f"| {g['block']} | {g['time_us']:.1f} | {100 * g['share']:.1f} % | {g['shrinkage_us']:.1f} |" for g in res.blocks]
    if res.sweep:
        lines += ["", "## Throughput by batch size", "", "| batch | windows/s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in res.sweep.items()]
    return "\n".join(lines) + "\n"


def write_profile_report(res, folder) -> dict:
    from .report import write_report_files

    return write_report_files(folder, "profile", {k: v for k, v in res.to_json().items() if k != "report"},
                              profile_markdown(res), lambda path: profile_figure(res, path))
