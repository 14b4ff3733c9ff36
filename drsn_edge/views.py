"""How results look to people: rich tables (and the few lines around them) for each command. The CLI
calls one of these after the library call; with --json it prints the result's JSON instead."""

from __future__ import annotations

from . import ui


def print_dataset(man: dict, as_json: bool, title: str) -> None:
    if as_json:
        ui.emit_json(man)
        return
    con = ui.console()
    con.print(f"[bold]{title}[/bold]  source={man['source']}  fs={man['fs']:g} Hz  window={man['window']}  "
              f"windows={man['n']}  normalization={man['normalization']}")
    splits = list(man["counts"])
    rows = [[name] + [man["counts"][s]["per_class"][i] for s in splits] for i, name in enumerate(man["class_names"])]
    rows.append(["recordings"] + [man["counts"][s]["recordings"] for s in splits])
    rows.append(["windows"] + [man["counts"][s]["windows"] for s in splits])
    con.print(ui.table("windows per class and split", ["class"] + splits, rows))
    grid = {k: v for k, v in man["noise_grid"].items() if k != "none"}
    if grid:
        con.print("noise grid: " + "; ".join(f"{k}: {min(v):g}..{max(v):g} dB ({len(v)} levels)" for k, v in grid.items()))
    else:
        con.print("noise grid: clean (no added noise)")


def print_train(arch: str, summary: dict) -> None:
    ui.console().print(ui.table(f"trained {arch} → {summary['out']}", ["metric", "value"], [
        ["best val accuracy %", ui.pct(summary["best_val_acc"])], ["best epoch", summary["best_epoch"]],
        ["kept", summary["selection"]], ["validation", summary["validation"]],
        ["training windows", summary["train_windows"]], ["parameters", summary["params"]],
        ["wall time s", round(summary["wall_s"], 1)], ["windows/s", round(summary["windows_per_s"] or 0)],
        ["processes", summary["world_size"]]]))


def print_evaluation(rep: dict) -> None:
    con = ui.console()
    con.print(f"[bold]{rep['model']['arch']}[/bold] ({rep['model']['path']}) on {rep['data']}: "
              f"accuracy [bold]{ui.pct(rep['accuracy'])} %[/bold] over {rep['n']} windows")
    con.print(ui.table("per class", ["class", "accuracy %"], [[k, ui.pct(v)] for k, v in rep["per_class"].items()]))
    noisy = {k: v for k, v in rep["per_snr"].items() if k != "none"}
    if noisy:
        snrs = sorted({s for cells in noisy.values() for s in cells}, key=float)
        kinds = sorted(noisy)
        rows = [[s] + [ui.pct(noisy[k].get(s)) for k in kinds] for s in snrs]
        con.print(ui.table("accuracy % per SNR (dB) × noise type", ["SNR dB"] + kinds, rows))
        if "none" in rep["per_snr"]:
            con.print(f"clean: {ui.pct(rep['per_snr']['none']['clean'])} %   "
                      f"mean over the noise grid: {ui.pct(rep['grid_mean_accuracy'])} %")
    dom = rep.get("domain")
    if dom:
        lvl = dom.get("level_range")
        level = (f"; raw level outside {lvl[0]:.3g}…{lvl[1]:.3g}: {ui.pct(dom['outside_level_range_share'])} %"
                 if lvl and dom.get("outside_level_range_share") is not None else "")
        con.print(f"domain guard: [bold]{ui.pct(dom['out_of_domain_share'])} %[/bold] of the windows are out of domain "
                  f"(unlike the training data; score > {dom['threshold']:.1f}{level})")
    names = rep["class_names"]
    con.print(ui.table("confusion matrix (rows = true class)", ["true \\ pred"] + names,
                       [[n] + row for n, row in zip(names, rep["confusion"])]))
    if rep.get("plot"):
        con.print(f"plot: {rep['plot']}")


def print_quantize(res: dict) -> None:
    con = ui.console()
    con.print(ui.table(f"INT8 ({res['method']}) vs float on {res['n']} windows of {res['evaluation']}", ["metric", "value"], [
        ["float accuracy %", ui.pct(res["float_accuracy"])], ["int8 accuracy %", ui.pct(res["int8_accuracy"])],
        ["drop pp", f"{res['accuracy_drop_pp']:.2f}"], ["drop over noise grid pp", ui.fmt(res["grid_drop_pp"])],
        ["worst SNR drop pp", f"{res['worst_snr_drop_pp']:.2f} (limit {res['max_cell_drop_pp_limit']:g})"],
        ["worst cell drop pp", f"{res['max_cell_drop_pp']:.2f}"], ["top-1 agreement %", ui.pct(res["agreement"])],
        ["output SQNR dB", f"{res['sqnr_db']:.1f}"], ["float groups (FP16)", ", ".join(res["float_groups"]) or "none"],
        ["quantization-aware fine-tuning", f"{res['qat']['epochs']} epochs on {res['qat']['data']}" if res["qat"] else "no"],
        ["quantize time s", f"{res['quantize_s']:.1f}"], ["artifact", res["artifact"] or "not written"]]))
    curve = res["snr_curve"]
    if curve:
        con.print(ui.table("accuracy % vs SNR (mean of noise types)", ["SNR dB", "float %", "int8 %", "drop pp"],
                           [[s, ui.pct(c["float"]), ui.pct(c["int8"]), f"{c['drop_pp']:.2f}"] for s, c in curve.items()]))
    con.print(ui.table("per class", ["class", "float %", "int8 %"],
                       [[k, ui.pct(v["float"]), ui.pct(v["int8"])] for k, v in res["per_class"].items()]))
    sel = res.get("method_selection")
    if sel:
        con.print(ui.table(f"--method auto on {sel['n']} windows of {sel['windows']}",
                           ["method", "worst SNR drop pp", "worst cell drop pp", "drop pp", "int8 %", ""],
                           [[r["method"], f"{r['worst_snr_drop_pp']:.2f}", f"{r['max_cell_drop_pp']:.2f}",
                             f"{r['drop_pp']:.2f}", ui.pct(r["int8_accuracy"]), "chosen" if r["chosen"] else ""]
                            for r in sel["table"]]))
    if res.get("error"):
        con.print(f"[red]{res['error']}[/red]")
    if res.get("sensitivity"):
        con.print(ui.table("sensitivity (accuracy drop pp)", ["group", "nodes", "only this int8", "all but this int8", "gain if float"],
                           [[r["group"], r["nodes"], f"{r['only_this_int8_drop_pp']:.2f}", f"{r['all_but_this_int8_drop_pp']:.2f}",
                             f"{r['gain_if_float_pp']:.2f}"] for r in res["sensitivity"]]))


def print_build(res) -> None:
    """A BuildResult: target, measured accuracy on the evaluation spec, memory, files and the next step."""
    con = ui.console()
    d = res.details
    if d.get("resolved"):
        con.print(d["resolved"])
    acc = res.accuracy or {}
    rows = [["target", f"{res.target} ({res.family}, {res.backend})"], ["precision", res.precision],
            ["artifact", res.artifact]]
    if acc:
        rows += [["float accuracy %", ui.pct(acc["reference_accuracy"])], ["int8 accuracy %", ui.pct(acc["accuracy"])],
                 ["drop pp", f"{acc['drop_pp']:.2f}"], ["worst noise cell drop pp", f"{acc['max_cell_drop_pp']:.2f}"],
                 ["top-1 agreement with float %", ui.pct(acc["agreement"])]]
    if d.get("bit_exact_with_tflm") is not None:
        rows.append(["C engine bit-exact with TFLite Micro %", ui.pct(d["bit_exact_with_tflm"])])
    if "litert_tflm_agreement" in d:
        rows += [["int8 accuracy (LiteRT) %", ui.pct(d["int8_litert"])],
                 ["LiteRT vs TFLM top-1 agreement %", ui.pct(d["litert_tflm_agreement"])],
                 ["LiteRT vs TFLM max difference (LSB)", d["litert_tflm_max_lsb"]]]
    rows += [[k, d[k]] for k in ("method", "tensorrt", "jetpack", "sm") if d.get(k) is not None]
    if d.get("choice"):
        rows += [["runtime chosen", f"{d['choice']['candidate']}"], ["why", d["choice"]["reason"]]]
    rows += [["measured on", res.evaluation["description"]], ["wall time s", f"{res.wall_s:.1f}"]]
    con.print(ui.table(f"build → {res.out_dir}", ["field", "value"], rows))
    mem = res.memory
    if mem and "activation_bytes" in mem:
        con.print(ui.table(f"memory on {res.target} ({'fits' if mem['fits'] else 'DOES NOT FIT'}; {mem['source']})",
                           ["", "bytes", "budget"], [
            ["flash (code + weights)", mem["flash_bytes"], mem["flash_budget_bytes"]],
            ["RAM (activations + buffers + stack)", mem["ram_bytes"], mem["ram_budget_bytes"]],
            ["int8 weights", mem["weight_bytes"], ""], ["activation plan", mem["activation_bytes"], ""]]))
    elif mem:
        con.print(ui.table(f"memory on {res.target} ({'fits' if mem['fits'] else 'DOES NOT FIT'})",
                           ["", "bytes", "budget"], [
            ["model (.tflite)", mem["model_bytes"], ""], ["runtime code (estimate)", mem["runtime_code_bytes"], ""],
            ["flash total", mem["flash_bytes"], mem["flash_budget_bytes"]],
            [f"tensor arena (measured {mem['arena_measured_bytes']} + margin)", mem["arena_bytes"], ""],
            ["RAM total", mem["ram_bytes"], mem["ram_budget_bytes"]]]))
    if d.get("op_counts"):
        con.print("ops: " + ", ".join(f"{k}×{v}" for k, v in sorted(d["op_counts"].items())))
    if d.get("trtexec"):
        con.print(f"trtexec: [cyan]{d['trtexec']}[/cyan]")
    if d.get("next_step"):
        con.print(d["next_step"])
    con.print(f"check it: [cyan]drsn-edge check --target {res.target} {res.out_dir}[/cyan]")


def print_check(res) -> None:
    lat = res.latency_ms
    rows = [["runtime", res.runtime], ["artifact", res.artifact], ["windows", f"{res.n} ({res.data})"],
            ["accuracy %", ui.pct(res.accuracy)], ["reference (float) accuracy %", ui.pct(res.reference_accuracy)],
            ["drop pp", f"{res.accuracy_drop_pp:.2f}"], ["top-1 agreement with float %", ui.pct(res.agreement_with_float)],
            ["max abs diff", f"{res.max_abs_diff:.4g}"], ["SQNR dB", ui.fmt(res.sqnr_db)]]
    if res.bit_exact_with_tflm is not None:
        rows.append(["int8 outputs bit-exact with TFLite Micro %", ui.pct(res.bit_exact_with_tflm)])
    if res.device_counts:
        c = res.device_counts
        rows.append([f"{c['unit']} per inference", f"{c['per_inference']:,.0f}"])
        if c.get("per_mac"):
            rows.append([f"{c['unit']} per MAC", f"{c['per_mac']:.2f}"])
    if res.memory and res.memory.get("flash_bytes") is not None:
        rows.append(["flash / RAM bytes", f"{res.memory['flash_bytes']:,} / {res.memory['ram_bytes']:,}"])
    if lat["p50"] is not None:
        rows.append([f"latency p50/p90/p99/max ms ({res.timing_source})",
                     f"{lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} / {lat['max']:.3f}"])
    if res.throughput.get("batch1_per_s"):
        rows.append(["throughput 1/mean latency /s", f"{res.throughput['batch1_per_s']:.1f}"])
    rows += [[f"throughput batch {b} (sweep) /s", f"{v:.1f}"] for b, v in res.throughput.get("sweep", {}).items()]
    if res.domain:
        from .report import domain_source

        rows.append([f"out of domain % (domain guard, measured {domain_source(res.domain)})",
                     ui.pct(res.domain["out_of_domain_share"])])
        fg = res.domain.get("float_guard")
        if fg:
            rows.append(["guard flags equal to the float guard's %", f"{ui.pct(fg['flag_agreement'])} "
                         f"({ui.pct(fg['flag_agreement_far_from_threshold'])} away from the threshold)"])
    rows.append(["verdict", "PASSED" if res.passed else "FAILED: " + "; ".join(res.failures)])
    ui.console().print(ui.table(f"check {res.target} on {res.device}", ["metric", "value"], rows))
    if res.report:
        ui.console().print(f"report: {res.report['markdown']}")


def print_profile(res) -> None:
    """A ProfileResult: the slowest layers, the blocks, the totals."""
    con = ui.console()
    con.print(f"[bold]{res.target}[/bold]: {res.runtime} — {res.method}; {res.warmup} warm-up, {res.repeats} runs")
    if res.unit != "us":
        return _print_counter_profile(con, res)
    con.print(ui.table("slowest layers", ["layer", "block", "ops", "MACs", "µs", "share %", "MMAC/s"], [
        [r["module"], r["block"], ", ".join(r["op_types"]), r["macs"], f"{r['time_us']:.1f}", ui.pct(r["share"]),
         f"{r['macs_per_s'] / 1e6:.0f}" if r["macs_per_s"] else ""] for r in res.top(15)]))
    con.print(ui.table("per block", ["block", "µs", "share %", "of it shrinkage µs"], [
        [g["block"], f"{g['time_us']:.1f}", ui.pct(g["share"]), f"{g['shrinkage_us']:.1f}"] for g in res.blocks]))
    con.print(f"wall-clock p50 {res.wall_p50_us:.1f} µs (no profiler); op rows {res.rows_total_us:.1f} µs; "
              f"profiled run {res.profiled_total_us:.1f} µs; shrinkage branches {ui.pct(res.shrinkage_share)} % "
              f"of the op time; {res.total_macs} MACs")
    if res.sweep:
        con.print("throughput by batch: " + ", ".join(f"b{k}: {v:.0f}/s" for k, v in res.sweep.items()))
    if res.report:
        con.print(f"report: {res.report['markdown']}")


def _print_counter_profile(con, res) -> None:
    """Per-kernel instruction (cycle) counts: the costliest kernels, the blocks, and the check of the sum."""
    u, c = res.unit, res.counts
    top = sorted(res.rows, key=lambda r: -r["instructions"])[:15]
    con.print(ui.table(f"costliest kernels ({u} per inference)", ["kernel", "layer", "block", "op", "MACs", u,
                                                                  "share %", f"{u}/MAC"], [
        [r["name"], r["module"], r["block"], r["op_type"], r["macs"], f"{r['instructions']:.0f}", ui.pct(r["share"]),
         f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] else ""] for r in top]))
    con.print(ui.table("per block", ["block", "kernels", u, "share %", f"of it shrinkage {u}"], [
        [g["block"], g["ops"], f"{g['instructions']:.0f}", ui.pct(g["share"]), f"{g['shrinkage_instructions']:.0f}"]
        for g in res.blocks]))
    con.print(f"{u} per inference: {c['per_inference_unprofiled']:.0f} (normal firmware), kernels' sum "
              f"{c['kernels_sum']:.0f} (outside the kernels {c['outside_kernels']:.0f}, tolerance ±{c['tolerance']:.0f}: "
              f"{'ok' if c['within_tolerance'] else 'EXCEEDED'}); markers add {c['marker_overhead_per_inference']:.0f}; "
              f"shrinkage branches {ui.pct(res.shrinkage_share)} %; {res.total_macs} MACs, "
              f"{c['per_inference_unprofiled'] / max(res.total_macs, 1):.2f} {u}/MAC")
    if res.report:
        con.print(f"report: {res.report['markdown']}")


def print_benchmark(res) -> None:
    from .benchmark_report import COLUMNS, matrix_rows, timing_notes

    con = ui.console()
    con.print(ui.table(f"formats on this machine — {res.windows} windows ({res.evaluation})", COLUMNS, matrix_rows(res)))
    for note in timing_notes(res):
        con.print(f"timing of {note}")
    best, torch_row = res.best(), res.row("pytorch fp32")
    if best and torch_row and torch_row.p50_us:
        con.print(f"fastest: [bold]{best.format}[/bold] ({best.runtime}) {best.p50_us:.1f} µs p50 — "
                  f"{torch_row.p50_us / best.p50_us:.1f}× PyTorch eager")
    if res.report:
        con.print(f"report: {res.report['markdown']}")


def print_run_to_failure(res: dict) -> None:
    noise = "none" if res["noise"] is None else f"{res['noise']} at {res['snr_db']:g} dB"
    ui.console().print(ui.table(f"wrote {res['out']} (+ {res['out'].rsplit('.', 1)[0]}.json)", ["", "value"], [
        ["healthy until s", res["onset_s"]], ["then the fault grows", f"{res['fault']} {res['severity'][0]:g} → "
                                                                      f"{res['severity'][1]:g} mils over {res['fault_s']:g} s"],
        ["noise", noise], ["samples", res["n_samples"]], ["sample rate Hz", res["fs"]]]))


def print_monitor(res: dict) -> None:
    c, lat = res["counters"], res["latency_ms"]
    rows = [["final state", res["state"]], ["runner", res["runner"]], ["windows", c["windows"]],
            ["sensor windows (nan / flat / clipped)", f"{c['sensor_windows']} ({c['nan_windows']} / {c['flat_windows']} / "
                                                       f"{c['clipped_windows']})"],
            ["garbage lines / short bytes", f"{c['bad_lines']} / {c['short_bytes']}"], ["stalls", c["stalls"]],
            ["latency p50 / p99 ms", f"{ui.fmt(lat['p50'])} / {ui.fmt(lat['p99'])}"]]
    if res.get("alerts"):
        a = res["alerts"]
        rows.append(["alerts sent / waiting / dropped", f"{a['sent']} / {a['pending']} / {a['dropped']}"])
    ui.console().print(ui.table("monitor", ["", "value"], rows))
