"""The `drsn-edge` command line. It only parses options, calls one library function and prints the
result (a table for people, one JSON object with --json). Heavy modules are imported inside commands
so that `drsn-edge --help` stays fast and never imports torch."""

from __future__ import annotations

import os
import sys

import click

from . import __version__
from . import ui, views
from .validate import SEED, Count, Fractions, Real, SnrRange

SPLIT_HELP = "train,val,test fractions of recordings per class"


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")(f)


def _show_progress(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty() and not os.environ.get("DRSN_EDGE_NO_PROGRESS")


def _split(text) -> tuple[float, float, float]:
    from .errors import InputError

    if isinstance(text, tuple):  # already checked by the option's type
        return text
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise InputError(f"--split takes three fractions like 0.7,0.15,0.15, got '{text}'")
    return vals


@click.group(cls=ui.cli_group_class(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drsn-edge")
def main():
    """drsn-edge: Deep Residual Shrinkage Networks from vibration data to verified INT8 edge classifiers.

    Shell completion (bash): eval "$(_DRSN_EDGE_COMPLETE=bash_source drsn-edge)"
    """


# ---------------------------------------------------------------- data
@main.group()
def data():
    """Make, import and inspect vibration datasets (.npz + .json manifest)."""


def _noise_options(f):
    f = click.option("--noise-mode", type=click.Choice(["assign", "sweep"]), default="assign", show_default=True,
                     help="assign: one random noise cell per window; sweep: every window clean and in every cell.")(f)
    f = click.option("--snr", default=None, help="SNR in dB: a value (0), a list (-5,0,5) or a range (-5:5[:step]).")(f)
    f = click.option("--noise", default="none", show_default=True,
                     help="Added noise: gaussian,laplacian,pink, 'all' or 'none'.")(f)
    return f


@data.command("synth")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output dataset (.npz).")
@click.option("--windows-per-class", default=500, show_default=True, type=Count(1, 100_000))
@click.option("--recordings-per-class", default=None, type=Count(1, 100_000), help="Default: windows-per-class / 5.")
@click.option("--classes", default=None, help="Comma-separated subset of the 10 classes (default: all).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--condition", type=click.Choice(["nominal", "shifted"]), default="nominal", show_default=True,
              help="shifted: speeds, loads, resonances and damping outside the nominal ranges.")
@click.option("--split", default="0.7,0.15,0.15", show_default=True, type=Fractions(3, 1.0), help=SPLIT_HELP)
@_noise_options
@click.option("--run-to-failure", "rtf", is_flag=True,
              help="Instead: one machine's continuous signal, healthy then a growing fault (-o .wav or .npy).")
@click.option("--healthy-s", default=3600.0, show_default=True, type=Real(0.0, 86_400.0 * 30), help="Run to failure: healthy seconds.")
@click.option("--fault-s", default=600.0, show_default=True, type=Real(0.0, 86_400.0 * 30), help="Run to failure: seconds the fault grows.")
@click.option("--fault", type=click.Choice(["IR", "B", "OR"]), default="IR", show_default=True,
              help="Run to failure: inner race, ball or outer race.")
@click.option("--severity", default="7:21", show_default=True, help="Run to failure: spall size START:END in mils.")
@_json_option
def data_synth(out, windows_per_class, recordings_per_class, classes, seed, condition, split, noise, snr,
               noise_mode, rtf, healthy_s, fault_s, fault, severity, as_json):
    """Simulate rolling-bearing vibration (CWRU-like, 12 kHz, 2048-point windows)."""
    from .data.build import synth
    from .data.noise import parse_noise, parse_snr

    kinds = parse_noise(noise)
    snrs = parse_snr(snr) if snr is not None else None
    if rtf:
        from .data.run_to_failure import synth as synth_rtf

        res = synth_rtf(out, healthy_s=healthy_s, fault_s=fault_s, fault=fault, severity=severity, noise=kinds,
                        snr=snrs, seed=seed)
        ui.emit_json(res) if as_json else views.print_run_to_failure(res)
        return
    cls = [c.strip() for c in classes.split(",")] if classes else None
    with ui.progress_bar(_show_progress(as_json), "simulating classes") as adv:
        res = synth(out, windows_per_class=windows_per_class, recordings_per_class=recordings_per_class,
                    classes=cls, seed=seed, condition=condition, split=_split(split), noise=kinds, snr=snrs,
                    noise_mode=noise_mode, progress=lambda i, n: adv(i, n))
    views.print_dataset(res, as_json, f"wrote {res['out']}")


@data.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output dataset (.npz).")
@click.option("--fs", type=Real(1.0, 1e7), default=None, help="Source sample rate in Hz (required for .mat/.csv/.npy; WAV has its own).")
@click.option("--target-fs", type=Real(1.0, 1e7), default=12000.0, show_default=True, help="Resample to this rate.")
@click.option("--window", type=Count(64, 1 << 20), default=2048, show_default=True)
@click.option("--hop", type=Count(1, 1 << 20), default=None, help="Window hop in points (default: the window, no overlap).")
@click.option("--channel", type=click.Choice(["DE", "FE", "BA"]), default="DE", show_default=True,
              help="CWRU .mat accelerometer: drive end, fan end or base.")
@click.option("--column", default=None, help="CSV column (name or index), NPZ key or WAV channel.")
@click.option("--labels", "label_map", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON or CSV map of file-name pattern → class (default: parent folder name).")
@click.option("--classes", default=None, help="Comma-separated class order (default: sorted labels).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--split", default="0.7,0.15,0.15", show_default=True, type=Fractions(3, 1.0), help=SPLIT_HELP)
@click.option("--split-by", type=click.Choice(["recording", "time"]), default="recording", show_default=True,
              help="recording: whole recordings per split; time: cut every recording into contiguous "
                   "train/val/test segments (one recording per class).")
@_noise_options
@_json_option
def data_import(sources, out, fs, target_fs, window, hop, channel, column, label_map, classes, seed, split,
                split_by, noise, snr, noise_mode, as_json):
    """Import CWRU .mat, CSV, NPY/NPZ or WAV recordings (one file = one recording)."""
    from .data.build import import_files
    from .data.noise import parse_noise, parse_snr

    kinds = parse_noise(noise)
    snrs = parse_snr(snr) if snr is not None else None
    with ui.progress_bar(_show_progress(as_json), "importing files") as adv:
        res = import_files(
            out, sources, fs=fs, target_fs=target_fs, window=window, hop=hop, channel=channel, column=column,
            label_map=label_map, class_names=[c.strip() for c in classes.split(",")] if classes else None,
            split=_split(split), split_by=split_by, seed=seed, noise=kinds, snr=snrs, noise_mode=noise_mode,
            progress=lambda i, n: adv(i, n))
    for w in res["params"].get("warnings", []):
        print(f"drsn-edge: warning: {w}", file=sys.stderr)
    views.print_dataset(res, as_json, f"wrote {res['out']}")


@data.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output dataset (.npz).")
@_json_option
def data_merge(inputs, out, as_json):
    """Merge datasets (same rate and window); recording ids get their source's name, classes are the union."""
    from .data.build import merge_files

    res = merge_files(out, inputs)
    views.print_dataset(res, as_json, f"wrote {res['out']}")


@data.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@_json_option
def data_info(path, as_json):
    """Summarize a dataset: classes, counts, sample rate, window, splits, noise grid."""
    from .data.build import info

    views.print_dataset(info(path), as_json, str(path))


# ---------------------------------------------------------------- models, train, evaluate
@main.command("models")
@_json_option
def models_cmd(as_json):
    """List the shipped pretrained bundles and the registered architectures."""
    from .bundle import shipped_models
    from .models import ARCHITECTURES

    shipped = shipped_models()
    archs = [{"name": k, "description": v[1]} for k, v in ARCHITECTURES.items()]
    if as_json:
        ui.emit_json({"shipped": shipped, "architectures": archs})
        return
    con = ui.console()
    rows = [[m["name"] + (" (default)" if m["default"] else ""), m["arch"], m["classes"], f"{m['fs']:g}",
             m["window"], ui.pct(m["metrics"].get("clean_accuracy")), ui.pct(m["metrics"].get("accuracy_0db"))]
            for m in shipped]
    con.print(ui.table("shipped models", ["name", "arch", "classes", "fs", "window", "clean %", "0 dB %"], rows))
    for m in shipped:
        if m.get("reproduce"):
            con.print(f"reproduce {m['name']}: [cyan]{m['reproduce']}[/cyan]")
    con.print(ui.table("architectures", ["name", "description"], [[a["name"], a["description"]] for a in archs]))


@main.command("train")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Dataset .npz with train and val splits.")
@click.option("--arch", default="drsn-cw", show_default=True, help="Architecture (see `drsn-edge models`).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output model bundle (.drsn).")
@click.option("--epochs", default=100, show_default=True, type=Count(1, 100_000))
@click.option("--batch", default=128, show_default=True, type=Count(2, 65_536), help="Global batch size (split over processes).")
@click.option("--lr", default=0.1, show_default=True, type=Real(0.0, 10.0, lo_open=True), help="Initial LR; ×0.1 at 40 % and 80 % of the epochs.")
@click.option("--weight-decay", default=1e-4, show_default=True, type=Real(0.0, 1.0))
@click.option("--width", default=1.0, show_default=True, type=Real(0.0, 16.0, lo_open=True), help="Channel multiplier (1 = paper: 4/8/16).")
@click.option("--depth", default=4, show_default=True, type=Count(1, 64), help="Units per stage (4 = paper).")
@click.option("--noise", default="all", show_default=True, help="Augmentation noise types, or 'none'.")
@click.option("--snr-range", default="-5:5", show_default=True, type=SnrRange(), help="Augmentation SNR range lo:hi in dB.")
@click.option("--clean-fraction", default=0.2, show_default=True, type=Real(0.0, 1.0), help="Share of windows kept clean per epoch.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint beside the output (m.drsn: m.resume.pt).")
@click.option("--nproc", default=1, show_default=True, type=Count(1, 64),
              help="Train with N processes (PyTorch DDP over gloo, launched through torchrun).")
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="CPU threads per process (default: all cores / processes); lower it on a shared machine.")
@click.option("--val-data", default=None, type=click.Path(dir_okay=False),
              help="Validation windows from another dataset (its val split, else all of it) instead of --data's val split.")
@click.option("--init", "init", default=None, type=click.Path(dir_okay=False),
              help="Fine-tune from this .drsn (same architecture; a new head when the classes differ). "
                   "Default recipe then: 15 epochs at LR 0.01.")
@_json_option
@click.pass_context
def train_cmd(ctx, data, arch, out, epochs, batch, lr, weight_decay, width, depth, noise, snr_range, clean_fraction,
              seed, resume, nproc, threads, val_data, init, as_json):
    """Train a model with the paper's recipe and on-the-fly noise augmentation."""
    from .data.noise import parse_noise
    from .train import TrainConfig, preflight, recipe, train

    if init is not None:  # fine-tuning: the short recipe for what the user did not set
        epochs, lr = recipe(**_given(ctx, epochs=epochs, lr=lr))
    cfg = TrainConfig(data=data, out=out, arch=arch, epochs=epochs, batch=batch, lr=lr,
                      weight_decay=weight_decay, width=width, depth=depth, noise=tuple(parse_noise(noise)),
                      snr_min=snr_range[0], snr_max=snr_range[1], clean_fraction=clean_fraction, seed=seed, resume=resume,
                      threads=threads, val_data=val_data, init=init)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .distributed import relaunch_with_torchrun

        preflight(cfg)  # one error, before any worker starts
        sys.exit(relaunch_with_torchrun(nproc, sys.argv[1:]))
    rank0 = int(os.environ.get("RANK", 0)) == 0
    with ui.progress_bar(_show_progress(as_json) and rank0, f"training {arch}") as adv:
        state = {}

        def on_event(event, **info):
            if event == "start":
                state.update(info)
                adv(info["start_epoch"] * info["steps"], info["epochs"] * info["steps"])
            elif event == "step":
                adv(info["epoch"] * state["steps"] + info["step"],
                    info=f"epoch {info['epoch'] + 1}/{state['epochs']} loss {info['loss']:.3f} acc {100 * info['acc']:.1f}%")
            elif event == "epoch" and not _show_progress(as_json) and not as_json and rank0:
                print(f"epoch {info['epoch']}/{state['epochs']}: loss {info['loss']:.4f} "
                      f"train {100 * info['train_acc']:.2f}% val {100 * info['val_acc']:.2f}% "
                      f"(best {100 * info['best_val_acc']:.2f}%)", file=sys.stderr, flush=True)

        summary = train(cfg, progress=on_event)
    if not rank0:
        return
    if as_json:
        ui.emit_json(summary)
    else:
        views.print_train(arch, summary)


@main.command("evaluate")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="Dataset .npz (default: freshly simulated recordings the model never saw).")
@click.option("--split", default="test", show_default=True, help="Split(s) to evaluate, comma-separated, or 'all'.")
@click.option("--noise", default=None, help="Sweep every window over these noise types ('all'); default with no --data: all.")
@click.option("--snr", default=None, help="SNRs of the sweep in dB (default with no --data: -5:5).")
@click.option("--windows-per-class", default=40, show_default=True, type=Count(1, 100_000), help="Size of the simulated test set.")
@click.option("--condition", type=click.Choice(["nominal", "shifted"]), default="nominal", show_default=True,
              help="Operating conditions of the simulated test set.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="Write confusion matrix + accuracy-vs-SNR (PNG).")
@_json_option
def evaluate_cmd(model, data, split, noise, snr, windows_per_class, condition, seed, plot, as_json):
    """Accuracy overall, per class and per noise type × SNR (MODEL: a .drsn; default: the shipped model)."""
    from .data.noise import parse_noise, parse_snr
    from .evaluate import run_evaluation

    res = run_evaluation(model, data, parse_noise(noise) if noise else None, parse_snr(snr) if snr else None,
                         seed=seed, split=split, windows_per_class=windows_per_class, condition=condition, plot=plot)
    if as_json:
        ui.emit_json(res.to_json())
        return
    views.print_evaluation(res.to_json())


@main.group()
def guard():
    """The domain guard: flags windows unlike the model's training data (stored in the bundle)."""


@guard.command("fit")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="The model's training data (.npz): train split for the class means, val split for the threshold.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Bundle to write (may be MODEL).")
@click.option("--quantile", default=0.995, show_default=True, type=Real(0.5, 1.0),
              help="Threshold: this quantile of held-out in-domain scores (per noise × SNR cell, the largest).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--taps", default=None, help="Feature taps, comma-separated (e.g. head or head,units.11.absmean); "
              "default: every tap the model offers (stem, each shrinkage unit, head).")
@_json_option
def guard_fit(model, data, out, quantile, seed, taps, as_json):
    """Fit the guard for an existing model without retraining it (its tensors are unchanged)."""
    from .guard import fit_bundle

    res = fit_bundle(model, data, out, seed=seed, quantile=quantile,
                     taps=[t.strip() for t in taps.split(",") if t.strip()] if taps else None)
    if as_json:
        ui.emit_json(res)
        return
    ui.console().print(ui.table(f"domain guard → {res['out']}", ["field", "value"], [
        ["threshold (squared Mahalanobis)", f"{res['threshold']:.2f}"], ["quantile", res["quantile"]],
        ["taps", f"{', '.join(res['taps'])} ({res['dim']} values)"],
        ["raw level range (std, data units)", f"{res['level']['lo']:.4g} … {res['level']['hi']:.4g}"],
        ["training windows", res["train_windows"]], ["held-out windows", res["held_out_windows"]],
        ["tensors sha256 (unchanged)", res["tensors_sha256"]]]))


# ---------------------------------------------------------------- export, calibration, quantize, lint
@main.command("export")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output ONNX file.")
@click.option("--batch", default=1, show_default=True, type=Count(1, 4096), help="Static batch size of the input.")
@click.option("--opset", default=17, show_default=True, type=Count(13, 21))
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="Windows to validate on (default: the default calibration set or simulated ones).")
@_json_option
def export_cmd(model, out, batch, opset, data, as_json):
    """Export the deploy form (BN folded, int8-friendly soft threshold) to ONNX, validated vs PyTorch."""
    from .export import export

    res = export(model, out, batch=batch, opset=opset, data=data)
    if as_json:
        ui.emit_json(res)
        return
    v = res["validation"]
    ui.console().print(ui.table(f"exported {res['artifact']}", ["check", "value"], [
        ["nodes", res["nodes"]], ["ops", ", ".join(res["ops"])],
        ["max |ONNX Runtime − PyTorch|", f"{v['max_abs_diff']:.2e}"],
        ["top-1 agreement %", ui.pct(v["top1_agreement"])], ["windows", f"{v['n']} from {v['windows']}"],
        ["sidecar", res["sidecar"]]]))


@main.command("import")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output model bundle (.drsn).")
@click.option("--meta", "meta_json", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSON with class_names, fs, window, normalization, arch (when the source lacks them).")
@click.option("--classes", default=None, type=Count(2, 10_000), help="Number of classes (names default to class0..).")
@click.option("--class-names", default=None, help="Comma-separated class names.")
@click.option("--fs", default=None, type=Real(1.0, 1e7), help="Sample rate in Hz.")
@click.option("--window", default=None, type=Count(64, 1 << 20), help="Window length in points.")
@click.option("--arch", default=None, help="Architecture, where the weights cannot tell (resnet vs convnet).")
@_json_option
def import_cmd(src, out, meta_json, classes, class_names, fs, window, arch, as_json):
    """Import an ONNX file, a TorchScript archive or a PyTorch state dict as a .drsn bundle."""
    from .model_import import import_model

    res = import_model(src, out, meta_json=meta_json, classes=classes,
                       class_names=[c.strip() for c in class_names.split(",")] if class_names else None,
                       fs=fs, window=window, arch=arch)
    if as_json:
        ui.emit_json(res)
        return
    ui.console().print(ui.table(f"imported {src} → {res['out']}", ["field", "value"], [
        ["format", res["source_format"]], ["arch", res["arch"]], ["config", res["config"]],
        ["classes", ", ".join(res["class_names"])], ["fs", res["fs"]], ["window", res["window"]],
        ["parameters", res["params"]]]))


@main.group()
def calibration():
    """Make and inspect calibration sets (real windows for INT8 quantization)."""


@calibration.command("make")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Dataset to draw from (not its test split).")
@click.option("--n", "n", default=512, show_default=True, type=Count(1, 1_000_000), help="Number of windows.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option("--noise", default="all", show_default=True, help="Noise types added to clean windows ('none': keep clean).")
@click.option("--snr", default="-5:5", show_default=True, help="SNR grid in dB for the added noise.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@_json_option
def calibration_make(data, n, out, noise, snr, seed, as_json):
    """Draw a stratified calibration set (class × noise type × SNR) from non-test recordings."""
    from .calibration import make_calibration
    from .data.noise import parse_noise, parse_snr

    res = make_calibration(data, out, n=n, seed=seed, noise=parse_noise(noise), snrs=parse_snr(snr))
    for w in res["warnings"]:
        print(f"drsn-edge: warning: {w}", file=sys.stderr)
    views.print_dataset(res, as_json, f"wrote {res['out']}")


@calibration.command("info")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@_json_option
def calibration_info(path, as_json):
    """Summarize a calibration set (default: the shipped one) with its provenance."""
    from .calibration import default_calibration_path, info

    res = info(path or default_calibration_path())
    if as_json:
        ui.emit_json(res)
        return
    views.print_dataset(res, False, res["path"])
    prov = res["params"].get("provenance", {})
    ui.console().print(f"provenance: {prov.get('dataset')} ({prov.get('dataset_generator') or prov.get('dataset_source')})"
                       f"\ngenerator: {res['generator']}\nsha256: {res['sha256']}")


def _eval_options(f):
    """The evaluation spec shared by quantize, build and check (one default for all three)."""
    f = click.option("--seed", default=0, show_default=True, type=SEED,
                     help="Seed of the simulated evaluation recordings and of the added noise.")(f)
    f = click.option("--windows-per-class", default=10, show_default=True, type=click.IntRange(1, 100_000),
                     help="Windows per class of the simulated evaluation set (ignored with --data).")(f)
    f = click.option("--snr", default="-5,0,5", show_default=True, help="SNRs (dB) of the evaluation noise sweep.")(f)
    f = click.option("--noise", default="all", show_default=True,
                     help="Noise types the evaluation windows are swept over ('none': clean only).")(f)
    f = click.option("--data", default=None, type=click.Path(dir_okay=False),
                     help="Labelled evaluation windows (.npz; its test split). Default: fresh simulated recordings.")(f)
    return f


def _spec(data, noise, snr, windows_per_class, seed):
    from .data.noise import parse_noise, parse_snr
    from .evalspec import EvalSpec

    kinds = parse_noise(noise)
    return EvalSpec(data=data, windows_per_class=windows_per_class, noise=tuple(kinds),
                    snrs=tuple(parse_snr(snr)) if kinds else (), seed=seed)


def _given(ctx, **values) -> dict:
    """Only the options the user set on the command line (a backend refuses those it does not take)."""
    from click.core import ParameterSource

    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}


@main.command("quantize")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--calib", default=None, type=click.Path(dir_okay=False), help="Calibration set (default: calibration/default.npz).")
@click.option("--method", type=click.Choice(["auto", "minmax", "percentile", "entropy", "mse"]), default="auto",
              show_default=True, help="Calibration method; auto: each one measured on validation windows, the one "
                                      "with the smallest worst-SNR drop kept.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output INT8 QDQ ONNX.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 4096))
@click.option("--max-drop", default=1.0, show_default=True, type=Real(0.0, 100.0), help="Fail (exit 1) above this accuracy drop in pp.")
@click.option("--max-cell-drop", default=0.5, show_default=True, type=Real(0.0, 100.0),
              help="Fail (exit 1) above this drop (pp) at the worst SNR level (mean over noise types).")
@_eval_options
@click.option("--sensitivity", is_flag=True, help="Rank layer groups by quantization sensitivity.")
@click.option("--auto-mixed", is_flag=True, help="Keep the fewest layer groups in float needed to meet --max-drop.")
@click.option("--qat", "qat_epochs", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Quantization-aware fine-tuning epochs before quantizing (0: post-training only).")
@click.option("--qat-data", default=None, type=click.Path(dir_okay=False),
              help="Labelled windows for --qat (default: fresh simulated recordings).")
@_json_option
def quantize_cmd(model, calib, method, out, batch, max_drop, max_cell_drop, data, noise, snr, windows_per_class, seed,
                 sensitivity, auto_mixed, qat_epochs, qat_data, as_json):
    """INT8 post-training quantization to TensorRT-ready QDQ ONNX, with an accuracy report."""
    from .quantize.run import quantize_model, raise_if_failed

    spec = _spec(data, noise, snr, windows_per_class, seed)
    with ui.progress_bar(_show_progress(as_json), "quantizing") as adv:
        res = quantize_model(model, calib, out, method=method, batch=batch, max_drop=max_drop,
                             max_cell_drop=max_cell_drop, spec=spec,
                             sensitivity=sensitivity, auto_mixed=auto_mixed, qat_epochs=qat_epochs, qat_data=qat_data,
                             progress=lambda stage, i=0, n=0: adv(i, n or None, info=stage))
    for w in res.warnings:
        print(f"drsn-edge: warning: {w}", file=sys.stderr)
    if as_json:
        ui.emit_json(res.to_json())
    else:
        views.print_quantize(res.to_json())
    raise_if_failed(res)


@main.command("lint")
@click.argument("model", type=click.Path(dir_okay=False))
@_json_option
def lint_cmd(model, as_json):
    """Check a QDQ ONNX model against TensorRT's INT8 rules (exit 1 on violations)."""
    from .errors import CheckFailedError
    from .quantize.lint import lint_model

    found = lint_model(model)
    res = {"model": model, "violations": [v.__dict__ for v in found], "passed": not found}
    if as_json:
        ui.emit_json(res)
    elif found:
        ui.console().print(ui.table(f"{len(found)} TensorRT rule violation(s) in {model}", ["rule", "node", "message"],
                                    [[v.rule, v.node, v.message] for v in found]))
    else:
        ui.console().print(f"{model}: no violations of TensorRT's INT8 Q/DQ rules")
    if found:
        raise CheckFailedError(f"{len(found)} violation(s); first: {found[0].rule}: {found[0].node}: {found[0].message}")


# ---------------------------------------------------------------- targets
@main.command("targets")
@click.argument("name", required=False)
@click.option("--targets-dir", "targets_dir", multiple=True, type=click.Path(file_okay=False),
              help="Extra folder of <name>.toml device profiles (repeatable; overrides shipped ones of the same name).")
@_json_option
def targets_cmd(name, targets_dir, as_json):
    """List the device profiles, or show every field of one (NAME)."""
    from .targets import all_targets, get_target, summary_row, targets_dirs

    extra = list(targets_dir)
    if name:
        t = get_target(name, extra)
        if as_json:
            ui.emit_json(t.to_dict())
            return
        d = t.to_dict()
        rows = [[k, d[k]] for k in ("name", "family", "backend", "description", "path")]
        rows += [[f"{sec}.{k}", v] for sec in ("hardware", "device", "check") for k, v in d[sec].items()]
        rows += [[k, d[k]] for k in ("flash_bytes", "ram_bytes", "ram_budget_bytes", "runtime_code_bytes")
                 if d[k] is not None]
        ui.console().print(ui.table(f"target {t.name}", ["field", "value"], rows))
        return
    targets = all_targets(extra)
    dirs = [str(d) for d in targets_dirs(extra)]
    if as_json:
        ui.emit_json({"targets": [t.to_dict() for t in targets.values()], "dirs": dirs})
        return
    cols = ["name", "family", "backend", "chip", "clock", "flash", "ram", "ram_budget", "stack", "transport"]
    rows = [[summary_row(t)[c] for c in cols] for t in targets.values()]
    ui.console().print(ui.table("device profiles", ["name", "family", "backend", "cpu/gpu", "clock", "flash", "RAM",
                                                    "RAM budget", "sm/TRT/JetPack", "transport"], rows,
                                caption="from " + ", ".join(dirs)))


def _device_options(f):
    f = click.option("--remote-python", default=None, help="Python on the device (default: python3).")(f)
    f = click.option("--ssh-identity", default=None, type=click.Path(dir_okay=False), help="ssh identity file (ssh -i).")(f)
    f = click.option("--ssh-config", default=None, type=click.Path(dir_okay=False), help="ssh client config file (ssh -F).")(f)
    return f


@main.command("build")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--target", "target_name", required=True, help="Target profile (see `drsn-edge targets`).")
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: build/<target>). Replaced only when the build succeeds.")
@click.option("--force", is_flag=True, help="Replace an output folder that is not a previous drsn-edge build.")
@click.option("--engine", type=click.Choice(["c", "tflm"]), default=None,
              help="Microcontroller engine: c (generated C, bit-exact with TFLite Micro; the default) or tflm.")
@click.option("--device", default=None, help="Build on the device: ssh://[user@]host[:port] (Jetson).")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default="int8", show_default=True)
@click.option("--calib", default=None, type=click.Path(dir_okay=False), help="Calibration set (default: the shipped one).")
@click.option("--method", type=click.Choice(["auto", "minmax", "percentile", "entropy", "mse"]), default="auto",
              show_default=True, help="Calibration method (auto: the best on validation windows). .tflite targets "
                                      "(microcontrollers, LiteRT) take auto, minmax or percentile.")
@click.option("--max-drop", default=1.0, show_default=True, type=Real(0.0, 100.0), help="Fail (exit 1) above this INT8 accuracy drop (pp).")
@click.option("--max-cell-drop", default=0.5, show_default=True, type=Real(0.0, 100.0),
              help="Fail (exit 1) above this drop (pp) at the worst SNR level.")
@click.option("--dla-core", default=None, type=Count(0, 7), help="Run on this DLA core with GPU fallback (Xavier, AGX Orin).")
@click.option("--workspace-mb", default=256, show_default=True, type=Count(1, 1 << 20), help="TensorRT builder workspace limit.")
@click.option("--opt-level", default=None, type=Count(0, 5), help="TensorRT builder optimization level (0-5, TensorRT ≥ 8.6).")
@click.option("--strongly-typed", is_flag=True, help="TensorRT 10: strongly typed network (always on 11).")
@_eval_options
@click.option("--targets-dir", multiple=True, type=click.Path(file_okay=False), help="Extra folder of target TOMLs.")
@_device_options
@_json_option
@click.pass_context
def build_cmd(ctx, model, target_name, out_dir, force, engine, device, precision, calib, method, max_drop, max_cell_drop,
              dla_core, workspace_mb, opt_level, strongly_typed, data, noise, snr, windows_per_class, seed, targets_dir,
              ssh_config, ssh_identity, remote_python, as_json):
    """Build MODEL (default: the shipped model) for a target: TensorRT engine (plan) for Jetsons,
    int8 .tflite + TFLite Micro firmware for microcontrollers, int8 for this machine (host)."""
    from .build import build
    from .check import device_options
    from .interrupts import final_commit

    given = _given(ctx, precision=precision, calib=calib, method=method, max_drop=max_drop,
                   max_cell_drop=max_cell_drop, dla_core=dla_core,
                   workspace_mb=workspace_mb, opt_level=opt_level, strongly_typed=strongly_typed)
    # a signal after the build folder was put in place does not interrupt: the build is reported (exit 0)
    with ui.progress_bar(_show_progress(as_json), f"building for {target_name}") as adv, final_commit():
        res = build(target_name, model, list(targets_dir) or None, out_dir=out_dir, device=device,
                    device_options=device_options(ssh_config, ssh_identity, remote_python),
                    spec=_spec(data, noise, snr, windows_per_class, seed), force=force, engine=engine,
                    progress=lambda stage, i=0, n=0: adv(i, n or None, info=stage), **given)
    if as_json:
        ui.emit_json(res)
    else:
        views.print_build(res)


@main.command("check")
@click.argument("build_dir", required=False, type=click.Path())
@click.option("--target", "target_name", required=True, help="Target profile (`jetson` detects it from the device).")
@click.option("--device", default=None,
              help="local, ssh://[user@]host[:port], qemu or serial://PORT (default: the target's [device] transport).")
@click.option("--build", "build_first", is_flag=True, help="Build first when the build folder is missing.")
@click.option("--model", default=None, type=click.Path(dir_okay=False),
              help="Refuse the build unless it was made from this model (with --build: build from it).")
@click.option("--calib", default=None, type=click.Path(dir_okay=False),
              help="Refuse the build unless it was calibrated with this set (with --build: calibrate with it).")
@_eval_options
@click.option("--report", default=None, type=click.Path(file_okay=False), help="Write JSON + Markdown + latency plot here.")
@click.option("--force", is_flag=True, help="Write into a non-empty folder that drsn-edge did not write.")
@_device_options
@click.option("--targets-dir", multiple=True, type=click.Path(file_okay=False))
@_json_option
def check_cmd(build_dir, target_name, device, build_first, model, calib, data, noise, snr, windows_per_class, seed,
              report, force, ssh_config, ssh_identity, remote_python, targets_dir, as_json):
    """Run what `build` produced (BUILD_DIR, or the artifact in it; default build/<target>) on the device and
    check accuracy and latency against the target's thresholds."""
    from .check import check, device_options, raise_if_failed

    with ui.progress_bar(_show_progress(as_json), f"checking {target_name}") as adv:
        res = check(target_name, build_dir, device, spec=_spec(data, noise, snr, windows_per_class, seed), model=model,
                    calib=calib, report=report, targets_dirs=list(targets_dir) or None, build_first=build_first,
                    device_opts=device_options(ssh_config, ssh_identity, remote_python), force=force,
                    progress=lambda stage, i=0, n=0: adv(i, n or None, info=stage))
    if as_json:
        ui.emit_json(res)
    else:
        views.print_check(res)
    raise_if_failed(res)


@main.command("profile")
@click.argument("build_dir", required=False, type=click.Path())
@click.option("--target", "target_name", default=None, help="Target of the build (default folder: build/<target>).")
@click.option("--repeats", default=100, show_default=True, type=Count(1, 1_000_000), help="Timed runs per op.")
@click.option("--warmup", default=20, show_default=True, type=Count(0, 1_000_000), help="Untimed runs first.")
@click.option("--no-sweep", is_flag=True, help="Skip the batch-size sweep.")
@click.option("--device", default=None,
              help="Where a device build runs: ssh://user@jetson for a TensorRT engine (default: this Jetson); "
                   "C-engine builds for emulated boards run on QEMU.")
@click.option("--report", default=None, type=click.Path(file_okay=False),
              help="Write profile.json, profile.md and profile.png (slowest layers, time per block) here.")
@_device_options
@click.option("--force", is_flag=True, help="Write into a non-empty folder that drsn-edge did not write.")
@_json_option
def profile_cmd(build_dir, target_name, repeats, warmup, no_sweep, device, report, ssh_config, ssh_identity,
                remote_python, force, as_json):
    """Per-layer latency of what `build` produced (BUILD_DIR or the artifact in it; default build/<target>):
    layer, op type, MACs, time, share, achieved MAC/s, and the share of the shrinkage branches. C-engine
    builds for emulated Cortex-M boards: instructions per kernel on QEMU."""
    from .check import device_options
    from .profile import profile

    with ui.progress_bar(_show_progress(as_json), "profiling") as adv:
        res = profile(build_dir, target_name, repeats=repeats, warmup=warmup, sweep=not no_sweep, report=report,
                      device=device, device_options=device_options(ssh_config, ssh_identity, remote_python),
                      force=force, progress=lambda stage, i=0, n=0: adv(i, n or None, info=stage))
    if as_json:
        ui.emit_json(res)
    else:
        views.print_profile(res)


@main.command("benchmark")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--work", "work_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for the per-format builds (default: build/benchmark); reused when they match the model.")
@click.option("--format", "formats", multiple=True, help="Only this format (repeatable; see the table's names).")
@click.option("--rebuild", is_flag=True, help="Rebuild every format even when the work folder has it.")
@_eval_options
@click.option("--report", default=None, type=click.Path(file_okay=False), help="Write benchmark.json, .md and .png here.")
@click.option("--force", is_flag=True, help="Write into a non-empty folder that drsn-edge did not write.")
@_json_option
def benchmark_cmd(model, work_dir, formats, rebuild, data, noise, snr, windows_per_class, seed, report, force, as_json):
    """Every format this machine can run for MODEL (default: the shipped model), on the same evaluation
    windows: status, artifact size, accuracy, agreement with float, batch-1 p50/p99, throughput, peak memory."""
    from .benchmark import benchmark

    with ui.progress_bar(_show_progress(as_json), "benchmarking") as adv:
        res = benchmark(model, work_dir=work_dir, spec=_spec(data, noise, snr, windows_per_class, seed),
                        formats=list(formats) or None, force_build=rebuild, report=report, force=force,
                        progress=lambda stage, i=0, n=0: adv(i, n or None, info=stage))
    if as_json:
        ui.emit_json(res)
    else:
        views.print_benchmark(res)


# ---------------------------------------------------------------- monitor
@main.command("monitor")
@click.argument("model", required=False, type=click.Path())
@click.option("--source", "source", required=True,
              help="A recording (.wav/.csv/.npy/.npz/.mat), '-' for stdin, tcp://HOST:PORT or serial://PORT[?baud=N].")
@click.option("--model", "model_opt", default=None, type=click.Path(),
              help="A build folder or artifact, or a .drsn bundle (float, PyTorch). Default: the shipped model.")
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False), help="Append the JSON lines to this file.")
@click.option("--fs", type=Real(1.0, 1e7), default=None, help="Source sample rate in Hz (default: the WAV's own, else the model's).")
@click.option("--resample", is_flag=True, help="Resample a source at another rate (default: refuse it).")
@click.option("--hop", type=Count(1, 1 << 20), default=None, help="Samples between window starts (default: the window, no overlap).")
@click.option("--realtime", is_flag=True, help="Replay a file at its real rate (default: as fast as possible).")
@click.option("--format", "fmt", type=click.Choice(["auto", "text", "f32"]), default="auto", show_default=True,
              help="stdin/tcp/serial: one number per line, or raw little-endian float32.")
@click.option("--channel", type=click.Choice(["DE", "FE", "BA"]), default=None, help="CWRU .mat channel (default: DE).")
@click.option("--column", default=None, help="CSV column (name or index), NPZ key or WAV channel.")
@click.option("--healthy-class", default="normal", show_default=True, help="The model's class that means healthy.")
@click.option("--enter", "enter", default="4/6", show_default=True,
              help="K/N: enter fault (or sensor, unknown) when K of the last N windows say so.")
@click.option("--clear", "clear", default=6, show_default=True, type=Count(1, 100_000), help="Clear to healthy after this many healthy windows in a row.")
@click.option("--smoothing", default=0.5, show_default=True, type=Real(0.0, 1.0, lo_open=True),
              help="Weight of the newest window in the moving average of probabilities (1 = none).")
@click.option("--min-confidence", default=0.5, show_default=True, type=Real(0.0, 1.0),
              help="A smoothed top probability below this casts no vote.")
@click.option("--clip-level", default=None, type=Real(0.0, 1e30, lo_open=True), help="|x| where the sensor saturates (default: detect repeated extremes).")
@click.option("--stall-timeout", default=5.0, show_default=True, type=Real(0.0, 86_400.0, lo_open=True), help="Seconds without data before 'no data'.")
@click.option("--max-windows", default=None, type=Count(1, 2**62), help="Stop after this many windows.")
@click.option("--mqtt", default=None, help="Send alerts to mqtt://HOST[:PORT]/TOPIC or mqtts://… (credentials: environment or --mqtt-config).")
@click.option("--mqtt-config", default=None, type=click.Path(dir_okay=False),
              help="TOML file with [mqtt] client_id, username, password, ca_file, cert_file, key_file.")
@click.option("--alert-queue", default=None, type=click.Path(dir_okay=False),
              help="On-disk alert queue (default: ~/.local/state/drsn-edge/alerts-<broker>.jsonl).")
@click.option("--queue-max", default=None, type=Count(1, 10_000_000),
              help="Alerts the queue holds while the broker is away (default: 10000).")
@click.option("--guard/--no-guard", default=True, show_default=True,
              help="Windows the model's domain guard finds unlike its training data vote 'unknown', not a fault.")
@_json_option
def monitor_cmd(model, source, model_opt, out, fs, resample, hop, realtime, fmt, channel, column, healthy_class, enter,
                clear, smoothing, min_confidence, clip_level, stall_timeout, max_windows, mqtt, mqtt_config, alert_queue,
                queue_max, guard, as_json):
    """Monitor a live vibration stream with MODEL (a build folder, artifact or .drsn): one JSON line per
    window and per health-state change (a live view on a terminal), alerts over MQTT. SIGINT/SIGTERM
    flush the output and the alert queue and exit 0."""
    from .errors import InputError
    from .monitor import MonitorOptions, monitor
    from .monitor.health import HealthConfig, parse_enter
    from .monitor.stream import SampleChecks

    if model and model_opt:
        raise InputError("name the model once: as the argument or with --model")
    k, n = parse_enter(enter)
    opts = MonitorOptions(
        source=source, model=model or model_opt, guard=guard, out=out, fs=fs, hop=hop, realtime=realtime, resample=resample,
        fmt=fmt, channel=channel, column=column,
        health=HealthConfig(k=k, n=n, m=clear, smoothing=smoothing, min_confidence=min_confidence,
                            healthy_class=healthy_class),
        checks=SampleChecks(clip_level=clip_level), stall_timeout=stall_timeout, mqtt=mqtt,
        mqtt_config=mqtt_config, alert_queue=alert_queue, queue_max=queue_max, max_windows=max_windows)
    live = sys.stdout.isatty() and not as_json
    res = monitor(opts, live=live, summary_only=as_json)
    if as_json:
        ui.emit_json(res)
    elif live:
        views.print_monitor(res)


if __name__ == "__main__":  # pragma: no cover
    main()
