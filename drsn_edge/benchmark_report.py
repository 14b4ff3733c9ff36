"""The `benchmark --report DIR` files: benchmark.json, benchmark.md (the matrix) and benchmark.png
(batch-1 p50 latency and accuracy per format that ran)."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_path


def _cell(v, fmt: str, scale: float = 1.0) -> str:
    return "" if v is None else format(v * scale, fmt)


def matrix_rows(res) -> list[list[str]]:
    """The matrix as text cells (shared by the Markdown report, the terminal table and the scripts)."""
    out = []
    for r in res.rows:
        status = r.status if r.status == "ok" else f"{r.status}: {r.reason}"
        out.append([r.format, r.runtime, status, _cell(r.artifact_bytes and r.artifact_bytes / 1024, ".1f"),
                    _cell(r.accuracy, ".2f", 100), _cell(r.agreement, ".2f", 100), _cell(r.p50_us, ".1f"),
                    _cell(r.p99_us, ".1f"), _cell(r.throughput_per_s, ".0f") + (f" (b{r.throughput_batch})"
                                                                                if r.throughput_batch else ""),
                    _cell(r.peak_memory_mib, ".1f")])
    return out


COLUMNS = ["format", "runtime", "status", "artifact KiB", "accuracy %", "agreement %", "p50 µs", "p99 µs",
           "windows/s", "peak mem MiB"]


def timing_notes(res) -> list[str]:
    """One line per row timed otherwise than by this machine's wall clock."""
    return [f"{r.format}: {r.timing_source}" for r in res.rows
            if r.status == "ok" and r.timing_source and r.timing_source != "host wall clock"]


def benchmark_markdown(res) -> str:
    lines = [f"# drsn-edge benchmark: {Path(res.model).name}", "",
             f"- windows: {res.windows} ({res.evaluation})", f"- machine: {res.machine}",
             ("- latency: batch 1, host wall clock per window after warm-up; throughput: the best batch size of the "
              "runner's sweep (batch 1 where it cannot batch); peak memory: rise of the process's peak RSS while the "
              "format loads and runs"), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in matrix_rows(res)]
    lines += ["", *(f"- timing of {n}" for n in timing_notes(res))]
    best, torch_row = res.best(), res.row("pytorch fp32")
    if best and torch_row and torch_row.p50_us:
        lines += ["", (f"Fastest: **{best.format}** ({best.runtime}) at {best.p50_us:.1f} µs p50, "
                       f"{torch_row.p50_us / best.p50_us:.1f}× PyTorch eager ({torch_row.p50_us:.1f} µs).")]
    return "\n".join(lines) + "\n"


def benchmark_figure(res, path: Path) -> Path:
    from .deps import pyplot

    plt = pyplot()
    ok = [r for r in res.rows if r.status == "ok"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.barh([r.format for r in ok][::-1], [r.p50_us for r in ok][::-1], color="tab:blue")
    a.set_xscale("log")
    a.set_xlabel("batch-1 p50 latency (µs, log scale)")
    b.barh([r.format for r in ok][::-1], [100 * r.accuracy for r in ok][::-1], color="tab:green")
    b.set_xlim(min([100 * r.accuracy for r in ok] + [90]) - 1, 100)
    b.set_xlabel(f"accuracy on {res.windows} windows (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_benchmark_report(res, folder) -> dict:
    from .report import write_report_files

    return write_report_files(folder, "benchmark", {k: v for k, v in res.to_json().items() if k != "report"},
                              benchmark_markdown(res), lambda path: benchmark_figure(res, path))
