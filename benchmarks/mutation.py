#!/usr/bin/env python
"""Mutation testing of the modules that decide things: does the suite notice when their code is wrong?

For each module below, mutmut (https://mutmut.readthedocs.io) makes small changes to its functions (a
comparison flipped, a constant changed, an argument dropped …) and runs only that module's own tests
against each change. A mutant the tests do not notice "survived": either the tests miss a behaviour, or
the change does not alter behaviour (an equivalent mutant). Slow (minutes per module): run it by hand,
not in CI.

  python benchmarks/mutation.py                      # every module
  python benchmarks/mutation.py protocol noise       # some modules
  python benchmarks/mutation.py --list               # the modules and their tests
  python benchmarks/mutation.py targets --show       # also print the diff of each survivor

Each module runs in a fresh copy of the working tree (mutmut writes its mutants/ folder there), so the
checkout is never modified. Prints one line per module (generated / killed / survived / other) and the
survivors' names, and updates benchmarks/results/mutation.json (the modules run replace their rows).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _fns(module: str, *names: str) -> list[str]:
    """mutmut's mutant-name globs for some functions (or Class.method) of a module."""
    out = []
    for n in names:
        cls, _, fn = n.rpartition(".")
        out.append(f"{module}.x{'ǁ' + cls + 'ǁ' if cls else '_'}{fn}__mutmut_*")
    return out


def _tests(path: str, *names: str) -> list[str]:
    return [f"{path}::{n}" for n in names]


EVALUATE_TESTS = _tests(
    "tests/test_evaluate.py", "test_accuracy_report_overall_and_per_class_by_hand",
    "test_confusion_matrix_rows_are_truth_columns_prediction", "test_per_noise_and_snr_cells_by_hand",
    "test_grid_mean_without_noisy_cells_is_none", "test_no_windows_is_an_input_error",
    "test_evaluate_uses_exactly_the_chosen_split", "test_evaluate_noise_grid_replicates_the_test_split",
    "test_load_test_windows_keeps_only_test_when_present", "test_incompatible_data_is_refused",
    "test_evaluate_never_falls_back_to_other_splits", "test_confusion_matrix_is_whole_counts_in_json",
    "test_incompatible_data_messages", "test_evaluate_sweeps_the_test_windows_with_its_seed_and_scores_each_answer",
    "test_noise_types_without_snrs_evaluate_the_windows_as_they_are") + _tests(
    "tests/test_guard.py", "test_training_stores_a_guard_that_keeps_held_out_windows_in_domain")
VERDICT_TESTS = _tests(
    "tests/quantize/test_quantize.py", "test_compare_figures_by_hand", "test_compare_curve_averages_noise_types_per_snr",
    "test_compare_without_any_loss",
    "test_drop_is_exact_so_a_tie_with_the_threshold_passes", "test_analyse_ranks_groups_by_a_known_additive_drop",
    "test_analyse_ranks_by_own_cost_then_by_gain", "test_auto_mixed_search_stops_when_target_met",
    "test_auto_mixed_tie_stops_and_unmet_target_is_reported") + _tests(
    "tests/test_verdicts.py", "test_verdict_by_hand", "test_thresholds_of_a_profile",
    "test_thresholds_of_a_target_made_in_code",
    "test_staged_output_replaces_only_on_success", "test_stale_staging_of_dead_runs_is_cleaned_and_live_ones_are_kept",
    "test_memory_fit_needs_flash_and_ram_both", "test_memory_fit_without_a_runtime_figure_assumes_200_kib",
    "test_arena_margin_is_ten_percent_rounded_up_to_16_bytes")
GATE_TESTS = _tests(
    "tests/quantize/test_auto.py", "test_worst_snr_drop_includes_the_clean_cell_and_never_goes_below_zero",
    "test_auto_picks_the_smallest_worst_snr_drop_on_a_stubbed_table",
    "test_ties_go_to_the_worst_cell_then_the_overall_drop_then_the_method_order",
    "test_gate_error_checks_the_overall_drop_and_the_worst_snr_level", "test_gate_error_at_and_beside_each_limit_by_hand",
    "test_raise_if_failed_raises_the_summary_error_with_exit_code_1",
    "test_row_copies_the_figures_and_select_breaks_every_tie_in_order",
    "test_choose_measures_each_method_once_in_order_and_reports_progress",
    "test_worst_snr_drop_without_a_curve_or_a_clean_cell", "test_quantize_options_are_checked_on_both_sides_of_each_bound")
# end to end (each mutant trains the 4-class fixture and builds three times, about a minute): the cell gate at the
# tie and one window over on LiteRT, whose build is gated by build itself (ONNX Runtime's is gated in quantize)
BUILD_TESTS = _tests(
    "tests/test_cell_gate.py", "test_build_passes_a_cell_drop_equal_to_max_cell_drop[litert]",
    "test_build_fails_one_window_over_max_cell_drop[litert]", "test_a_float_build_is_neither_measured_nor_gated")
QAT_TESTS = _tests(
    "tests/quantize/test_qat.py", "test_activation_fake_quant_by_hand",
    "test_calibrating_records_the_running_max_and_passes_values_through",
    "test_weight_fake_quant_is_symmetric_per_output_channel", "test_cosine_schedule")

# module name -> (source files, the tests that pin their behaviour, the functions to mutate: None for all).
# Only tests that pin a function by hand (seconds) are run against its mutants: the end-to-end tests that
# train, quantize or build a model take minutes each and run in the normal suite.
MODULES = {
    "verdicts": (["drsn_edge/comparison.py", "drsn_edge/evaluate.py", "drsn_edge/quantize/sensitivity.py",
                  "drsn_edge/check.py", "drsn_edge/build.py", "drsn_edge/fileio.py", "drsn_edge/backends/tflm.py",
                  "drsn_edge/firmware/bundle.py"], VERDICT_TESTS,
                 _fns("drsn_edge.comparison", "compare", "output_stats") + _fns("drsn_edge.evaluate", "drop_pp")
                 + _fns("drsn_edge.quantize.sensitivity", "analyse", "auto_mixed")
                 + _fns("drsn_edge.check", "verdict", "Thresholds.of")
                 + _fns("drsn_edge.build", "staged_output", "clean_stale_staging")
                 + _fns("drsn_edge.fileio", "clean_stale", "_pid_alive")
                 + _fns("drsn_edge.backends.tflm", "memory_fit") + _fns("drsn_edge.firmware.bundle", "arena_with_margin")),
    "evaluate": (["drsn_edge/evaluate.py"], EVALUATE_TESTS,
                 _fns("drsn_edge.evaluate", "accuracy_report", "evaluate", "check_compatible", "grid_mean",
                      "load_test_windows")),
    "train": (["drsn_edge/train.py"], _tests("tests/test_train.py", "test_lr_schedule_follows_paper_fractions",
                                             "test_epoch_selection_by_hand",
                                             "test_a_record_without_a_loss_counts_as_an_infinite_loss"),
              _fns("drsn_edge.train", "_lr_at", "is_better", "best_record")),
    "noise": (["drsn_edge/data/noise.py"], ["tests/test_noise.py"],
              _fns("drsn_edge.data.noise", "add_noise", "measured_snr_db", "noise_sweep", "assign_noise")),
    "protocol": (["drsn_edge/firmware/protocol.py"], ["tests/firmware/test_protocol.py"], None),
    "targets": (["drsn_edge/targets.py"], ["tests/test_targets_rules.py"],
                _fns("drsn_edge.targets", "_value", "_section", "load_target_file", "_device", "summary_row")),
    "gates": (["drsn_edge/quantize/run.py", "drsn_edge/quantize/auto.py"], GATE_TESTS,
              _fns("drsn_edge.quantize.run", "gate_error", "raise_if_failed", "_validate", "_check_out")
              + _fns("drsn_edge.quantize.auto", "worst_snr_drop_pp", "row", "select", "choose")),
    "build": (["drsn_edge/build.py"], BUILD_TESTS, _fns("drsn_edge.build", "_build", "measure_build", "reference_logits")),
    "qat": (["drsn_edge/quantize/qat.py"], QAT_TESTS,
            _fns("drsn_edge.quantize.qat", "ActFakeQuant.forward", "_weight_fq", "cosine_lr")),
}

# mutmut's result names; "killed" and "timeout" both mean the tests noticed
NOTICED = ("killed", "timeout", "caught by type check", "segfault")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if p and (ROOT / p).is_file()]


def _copy_tree(dest: Path) -> None:
    for rel in _tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


# modules whose tests start thread pools that do not survive fork (TensorFlow's converter in the LiteRT build):
# each mutant's worker is forked from a clean server process instead of mutmut's main process
FORKSERVER = {"build"}


def _setup_cfg(sources: list[str], tests: list[str], timeout_multiplier: float = 30.0, forkserver: bool = False) -> str:
    def block(items):
        return "\n" + "\n".join(f"    {i}" for i in items)

    return ("[mutmut]\n"
            "source_paths = drsn_edge\n"
            f"only_mutate ={block(sources)}\n"
            f"pytest_add_cli_args_test_selection ={block(tests)}\n"
            f"pytest_add_cli_args ={block(['-q', '-p', 'no:cacheprovider', '-m', 'not slow'])}\n"
            "use_git_change_detection = false\n"
            # generous time limits: on a busy machine a slow run is not a caught mutant
            f"timeout_multiplier = {timeout_multiplier}\n"
            "timeout_constant = 10.0\n"
            + ("process_isolation = forkserver\nforkserver_warmup = none\n" if forkserver else ""))


def _results(work: Path) -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true`."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work,
                         capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        if ":" in line:
            name, status = line.strip().rsplit(":", 1)
            res[name.strip()] = status.strip()
    return res


def run_module(name: str, max_children: int, show: bool, keep: bool, only: list[str] | None = None) -> dict:
    sources, tests, globs = MODULES[name]
    if only:  # a partial run: only these mutant names (or globs) of the module's functions
        globs = [o for o in only if globs is None or any(fnmatch.fnmatch(o, g) for g in globs)]
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    t0 = time.perf_counter()
    try:
        _copy_tree(work)
        (work / "setup.cfg").write_text(_setup_cfg(sources, tests, forkserver=name in FORKSERVER))
        # one thread for torch/OpenMP: mutmut forks a child per mutant from a process that has run the tests,
        # and a thread pool inherited through fork can deadlock the child (a spurious "timeout")
        env = dict(os.environ, PYTHONPATH=str(work / "mutants"), DRSN_EDGE_NO_PROGRESS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        # mutmut's first run in a fresh folder can fail to import the test packages it has just copied
        # (the import system cached the folder before the copy); the second run finds them
        for _ in range(2):
            log = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children),
                                  *(globs or [])], cwd=work, env=env, capture_output=True, text=True)
            res = _results(work)
            if globs:  # only the selected functions count
                res = {n: s for n, s in res.items() if any(fnmatch.fnmatch(n, g) for g in globs)}
            if res and any(s != "not checked" for s in res.values()):
                break
        if not res or all(s == "not checked" for s in res.values()):
            tail = (log.stdout + log.stderr).replace("\r", "\n")[-3000:]
            raise SystemExit(f"{name}: mutmut ran no mutant (exit {log.returncode}):\n{tail}")
        first_timeouts = sorted(n for n, st in res.items() if st == "timeout")
        if first_timeouts:
            # a changed time limit makes mutmut re-check exactly its timeouts: a mutant that loops forever
            # times out again, one whose child hung by accident (load, a stuck fork) gets its real verdict
            (work / "setup.cfg").write_text(_setup_cfg(sources, tests, timeout_multiplier=31.0,
                                                       forkserver=name in FORKSERVER))
            subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children),
                            *first_timeouts], cwd=work, env=env, capture_output=True, text=True)
            res.update({n: st for n, st in _results(work).items() if n in first_timeouts})
        survivors = sorted(n for n, s in res.items() if s == "survived")
        diffs = {}
        if show:
            for m in survivors:
                diffs[m] = subprocess.run([sys.executable, "-m", "mutmut", "show", m], cwd=work, env=env,
                                          capture_output=True, text=True).stdout
        other = {n: s for n, s in res.items() if s not in NOTICED and s != "survived"}
        return {"module": name, "sources": sources, "tests": tests, "generated": len(res),
                "killed": sum(s in NOTICED for s in res.values()), "survived": len(survivors),
                "other": other, "survivors": survivors, "diffs": diffs,
                "timeouts": sorted(n for n, st in res.items() if st == "timeout"),
                "timeouts_rechecked": first_timeouts,
                "wall_s": round(time.perf_counter() - t0, 1), "work": str(work) if keep else None,
                "only": only or None}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _save(out: Path, row: dict) -> None:
    """Replace this module's row in the results file, keeping the other modules' rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in (json.loads(out.read_text()) if out.exists() else []) if r.get("module") != row["module"]]
    rows.append(row)
    order = list(MODULES)
    rows.sort(key=lambda r: order.index(r["module"]) if r["module"] in order else len(order))
    out.write_text(json.dumps(rows, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)} (default: all)")
    ap.add_argument("--list", action="store_true", help="print the modules and their tests, then stop")
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--show", action="store_true", help="print the diff of every survivor")
    ap.add_argument("--keep", action="store_true", help="keep the work folders (to inspect with mutmut browse)")
    ap.add_argument("--only", nargs="+", metavar="MUTANT",
                    help="a partial run: only these mutant names or globs (e.g. drsn_edge.build.x__build__mutmut_9*)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mutation.json"))
    a = ap.parse_args(argv)
    if a.list:
        for n, (src, tests, globs) in MODULES.items():
            print(f"{n:10s} {' '.join(src)}{' (' + ', '.join(globs) + ')' if globs else ''}  ←  {' '.join(tests)}")
        return 0
    unknown = [m for m in a.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    out = Path(a.out)
    print(f"{'module':10s} {'generated':>9s} {'killed':>7s} {'survived':>8s} {'other':>6s} {'wall s':>7s}")
    for name in a.modules or list(MODULES):
        r = run_module(name, a.max_children, a.show, a.keep, a.only)
        print(f"{name:10s} {r['generated']:9d} {r['killed']:7d} {r['survived']:8d} {len(r['other']):6d} "
              f"{r['wall_s']:7.0f}", flush=True)
        for m in r["survivors"]:
            print(f"    survived: {m}")
            if a.show:
                print("      " + r["diffs"][m].replace("\n", "\n      "))
        for m, s in r["other"].items():
            print(f"    {s}: {m}")
        for m in r["timeouts"]:
            print(f"    timeout (twice; counted as killed): {m}")
        _save(out, r)  # after each module: a long run stopped early keeps what it finished
    return 0


if __name__ == "__main__":
    sys.exit(main())
