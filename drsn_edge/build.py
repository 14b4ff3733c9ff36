"""The `build` stage, the same for every target: resolve the profile, take its backend's options (refusing
any it does not take), let the backend write the artifact into a staging folder, measure what was built on
the evaluation spec, gate on the accuracy drop, write the build manifest, and only then replace the output
folder. Nothing downstream rebuilds: check, profile, monitor and benchmark load this folder."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from .errors import CheckFailedError, InputError

STAGING_PREFIX = "."  # staging folders: .<out>.<pid>.<random>, siblings of the output folder


def clean_stale_staging(out_dir: Path) -> None:
    """Remove staging folders that runs killed before they finished left beside the output folder."""
    from .fileio import clean_stale

    clean_stale(out_dir)


@contextlib.contextmanager
def staged_output(out_dir: Path):
    """Build into a temporary sibling folder; replace `out_dir` only when the build succeeds, so a
    failed or interrupted build leaves the output folder as it was."""
    from .fileio import remove_tree, stage_prefix
    from .interrupts import committed, deferred

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out_dir)
    tmp = None
    try:
        with deferred():  # a signal cannot fall between creating the folder and knowing its name
            tmp = Path(tempfile.mkdtemp(prefix=stage_prefix(out_dir), dir=out_dir.parent))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        yield tmp
        with deferred():  # the replacement is done whole, or not started
            _replace_folder(tmp, out_dir)
            committed()
    finally:
        if tmp is not None and tmp.exists():
            remove_tree(tmp)


def _replace_folder(new: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name[:100]}.old.{os.getpid()}.", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        os.replace(new, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out_dir)


def guard_output(out_dir: Path, inputs, force: bool = False) -> Path:
    """A build output folder that cannot destroy user data (outputs.guard_folder): replaced only when it is a
    previous build (its build.json marker) or with --force."""
    from .backends.base import is_build_folder
    from .outputs import guard_folder

    return guard_folder(out_dir, inputs, force, is_ours=is_build_folder)


def resolve_target(target_name: str, targets_dirs=None, device=None):
    """A target profile by name; `jetson` is resolved from this machine (drsn_edge.jetson_local) or from the
    connected device's L4T release and model."""
    from .targets import get_target, match_jetson

    if target_name == "jetson":
        if device is None or device.transport == "local":
            from .jetson_local import resolve_jetson_target

            return resolve_jetson_target(targets_dirs, purpose="build" if device is None else "check")
        jet = device.info().get("jetson") or {}
        if not jet.get("is_jetson"):
            raise InputError(f"--target jetson needs a Jetson, but {device.url} has no /etc/nv_tegra_release; "
                             "name the profile instead (drsn-edge targets)")
        return match_jetson(jet.get("nv_tegra_release") or "", jet.get("model"), targets_dirs)
    return get_target(target_name, targets_dirs)


def with_engine(target, engine: str | None):
    """The target with another backend of its family (`--engine c|tflm` for microcontrollers)."""
    import dataclasses

    from .targets import FAMILY_BACKENDS

    if engine is None:
        return target
    choices = FAMILY_BACKENDS[target.family]
    if target.family != "mcu" or engine not in choices:
        raise InputError(f"--engine {engine} does not apply to {target.name}"
                         + (f"; choose {' or '.join(choices)}" if target.family == "mcu" else
                            " (--engine chooses the microcontroller engine: c or tflm)"))
    return dataclasses.replace(target, backend=engine)


def build(target_name: str, model=None, targets_dirs=None, *, out_dir=None, device: str | None = None,
          device_options=None, spec=None, force: bool = False, progress=None, engine: str | None = None, **given):
    """Build `model` (default: the shipped one) for a target. `given` holds only the options the user set;
    the target's backend refuses any it does not take."""
    from .backends import get_backend
    from .targets import get_target

    if device is not None:
        # only a backend that builds on a device takes --device; check that before connecting
        if target_name != "jetson":
            target = get_target(target_name, targets_dirs)
            from .backends.base import make_options

            make_options(get_backend(target.backend), target, {**given, "device": device})
        from .devices import open_device

        with open_device(device, **(device_options or {})) as dev:
            target = resolve_target(target_name, targets_dirs, dev)
            return _build(target, model, dev, {**given, "device": device}, spec, out_dir, force, progress)
    target = with_engine(resolve_target(target_name, targets_dirs), engine)
    return _build(target, model, None, given, spec, out_dir, force, progress)


def _build(target, model, dev, given, spec, out_dir, force, progress):
    from .backends import get_backend
    from .backends.base import BuildContext, BuildResult, make_options
    from .calibration import model_and_calibration
    from .evalspec import EvalSpec
    from .quantize.auto import worst_snr_drop_pp
    from .quantize.run import gate_error

    backend = get_backend(target.backend)
    opts = make_options(backend, target, given)
    spec = spec or EvalSpec()
    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    bundle, model_path, cal, cal_path, warnings, cx = model_and_calibration(model, opts.calib)
    out_dir = guard_output(Path(out_dir or Path("build") / target.name), [model_path, cal_path, spec.data], force)
    spec = dataclasses.replace(spec, calibration=str(cal_path))  # evaluation fallback for unsimulated classes
    spec.preflight(bundle.meta)
    with staged_output(out_dir) as tmp:
        ctx = BuildContext(bundle=bundle, model_path=model_path, calibration=cal, calibration_path=cal_path,
                           calib_x=cx, target=target, options=opts, spec=spec, out=tmp, out_dir=out_dir, device=dev,
                           progress=step, warnings=list(warnings))
        out = backend.build(ctx)
        manifest = _manifest(ctx, backend, out)
        _write_manifest(tmp, manifest)
        if out.accuracy is None and getattr(opts, "precision", "int8") == "int8":
            step("evaluate")
            out.accuracy = measure_build(tmp, bundle, spec)
        if out.accuracy is not None:
            manifest["accuracy"] = out.accuracy.to_json()
            _write_manifest(tmp, manifest)
            err = gate_error(out.accuracy.drop_pp, worst_snr_drop_pp(manifest["accuracy"]), opts.max_drop,
                             opts.max_cell_drop)
            if err:
                raise CheckFailedError(f"{target.name} ({backend.name}): {err}")
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return BuildResult(
        target=target.name, family=target.family, backend=backend.name,
        precision=getattr(opts, "precision", "int8"), out_dir=str(out_dir), artifact=str(out_dir / out.artifact),
        sidecar=str(out_dir / Path(out.artifact).with_suffix(".json").name), files=files,
        evaluation={"spec": manifest["eval_spec"], "description": manifest["evaluation"]},
        accuracy=manifest.get("accuracy"), memory=out.memory, details=out.details, warnings=ctx.warnings,
        wall_s=time.perf_counter() - t0)


def _manifest(ctx, backend, out) -> dict:
    from . import __version__
    from .backends.base import MANIFEST_KIND, MANIFEST_VERSION
    from .fileio import sha256_file

    opts = {k: v for k, v in vars(ctx.options).items() if k != "calib"}
    return {
        "kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "drsn_edge": __version__,
        "target": ctx.target.name, "family": ctx.target.family, "backend": backend.name, "artifact": out.artifact,
        "source_model": str(ctx.model_path), "source_model_sha256": sha256_file(ctx.model_path),
        "arch": ctx.bundle.arch, "class_names": ctx.bundle.class_names, "fs": ctx.bundle.fs,
        "window": ctx.bundle.window, "normalization": ctx.bundle.normalization,
        "calibration": {"path": ctx.calibration_path, "sha256": sha256_file(ctx.calibration_path),
                        "windows": len(ctx.calibration)},
        "options": opts, "eval_spec": ctx.spec.to_json(), "evaluation": ctx.spec.describe(ctx.bundle.meta),
        "memory": out.memory, **({"choice": out.details["choice"]} if out.details.get("choice") else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_manifest(folder: Path, manifest: dict) -> None:
    from .backends.base import BUILD_MANIFEST
    from .fileio import write_json

    write_json(folder / BUILD_MANIFEST, manifest)


def reference_logits(bundle, x):
    """The float model's logits: the reference every runtime is compared with."""
    from .evaluate import predict_logits

    return predict_logits(bundle.model, x)


def measure_build(folder: Path, bundle, spec):
    """Run the artifact of a (staged) build folder on this machine over the spec's windows and compare it
    with the float model: the figure `build` reports is about the file it writes."""
    from .backends.base import load_build
    from .comparison import compare

    ev = spec.windows(bundle.meta)
    b = load_build(folder)
    runner = b.runner(None)
    try:
        runner.activate()
        got = runner.infer(ev.x)
    finally:
        runner.deactivate()
    return compare(reference_logits(bundle, ev.x), got, ev.y, ev.noise, ev.snr_db, bundle.class_names)
