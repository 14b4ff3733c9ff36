"""On-device accuracy and latency check of what `build` produced.

`check` loads the build folder (artifact + sidecar + manifest), refuses one made for another target, model
or calibration set, opens the device (the target's default transport unless --device says otherwise), runs
the build's runner over the evaluation windows, and compares the logits with the float model named in the
manifest — accuracy, agreement, SQNR in one place for every runtime — plus latency and throughput. The
target profile's [check] thresholds decide pass or fail. It never re-quantizes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import CheckFailedError, DeviceError, InputError


def device_options(ssh_config=None, ssh_identity=None, remote_python=None) -> dict:
    for flag, path in (("--ssh-config", ssh_config), ("--ssh-identity", ssh_identity)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{flag} '{path}' does not exist; give an existing file")
    opts = {}
    if ssh_config:
        opts["config_file"] = ssh_config
    if ssh_identity:
        opts["identity_file"] = ssh_identity
    if remote_python:
        opts["python"] = remote_python
    return opts


def default_device(target) -> str:
    """The target's [device] transport as a URL, where the profile says enough to reach it; else local
    (the check then runs on this machine)."""
    d = target.device
    transport = target.transport
    if transport == "ssh" and d.get("host"):
        user = f"{d['user']}@" if d.get("user") else ""
        return f"ssh://{user}{d['host']}" + (f":{d['port']}" if d.get("port") else "")
    if transport == "serial" and d.get("port"):
        return f"serial://{d['port']}" + (f"?baud={d['baud']}" if d.get("baud") else "")
    if transport == "qemu":
        return "qemu"
    if transport == "serial":
        raise InputError(f"{target.name} is checked over its serial port: pass --device serial:///dev/ttyACM0 "
                         "(or --device local to run the same kernels on this machine)")
    return "local"


@dataclass
class Thresholds:
    min_accuracy: float
    max_drop_pp: float
    max_latency_ms: float

    @classmethod
    def of(cls, target) -> "Thresholds":
        from .validate import finite

        c = target.check
        return cls(min_accuracy=finite("check.min_accuracy", c.get("min_accuracy", 0.9), 0.0, 1.0),
                   max_drop_pp=finite("check.max_drop_pp", c.get("max_drop_pp", 1.0), 0.0, 100.0),
                   max_latency_ms=float(c["max_latency_ms"]) if c.get("max_latency_ms") is not None
                   else float("inf"))


def verdict(accuracy: float, drop_pp: float, p99_ms: float | None, th: Thresholds) -> list[str]:
    """The failures of a check (empty: passed). A figure equal to its threshold passes: accuracy and drop
    are exact (from window counts, drsn_edge.comparison), so a tie compares equal."""
    failures = []
    if accuracy < th.min_accuracy:
        failures.append(f"accuracy {100 * accuracy:.2f} % < {100 * th.min_accuracy:.1f} %")
    if drop_pp > th.max_drop_pp:
        failures.append(f"drop {drop_pp:.2f} pp > {th.max_drop_pp:g} pp")
    if p99_ms is not None and p99_ms > th.max_latency_ms:
        failures.append(f"p99 latency {p99_ms:.2f} ms > {th.max_latency_ms:g} ms")
    return failures


@dataclass
class CheckResult:
    target: str
    device: str
    runtime: str
    artifact: str
    build_dir: str
    model: str
    data: str
    eval_spec: dict
    n: int
    accuracy: float
    reference_accuracy: float
    accuracy_drop_pp: float
    agreement_with_reference: float  # bit-exact share vs TFLite Micro for .tflite builds, else top-1 vs float
    agreement_with_float: float
    max_abs_diff: float
    sqnr_db: float
    latency_ms: dict
    timing_source: str
    throughput: dict
    memory: dict | None
    thresholds: dict
    passed: bool
    failures: list[str]
    device_facts: dict
    comparison: dict = field(default_factory=dict)
    reference: str = "float model (PyTorch)"
    bit_exact_with_tflm: float | None = None  # int8 .tflite builds: windows whose int8 outputs equal TFLM's
    device_counts: dict | None = None  # cycles or instructions per inference, where the device counts them
    latency_is_estimate: bool = False
    domain: dict | None = None  # out-of-domain share by the artifact's own guard (else the float model's, on the host)
    wall_s: float = 0.0
    report: dict | None = None

    def to_json(self) -> dict:
        """Every field; microcontroller runs also carry their counts and measured memory at the top level."""
        d = asdict(self)
        c, m = self.device_counts or {}, self.memory or {}
        if c:
            d[f"{c['unit']}_per_inference"] = c["per_inference"]
            d[f"{c['unit']}_per_mac"] = c["per_mac"]
        if "activation_bytes" in m:
            d["flash_bytes"], d["ram_bytes"] = m.get("flash_bytes"), m.get("ram_bytes")
        return d


def check_build_matches(build, target, model=None, calib=None) -> None:
    """Refuse a build folder made for another target, model or calibration set, naming the mismatch."""
    from .fileio import sha256_file

    man = build.manifest
    if man["target"] != target.name:
        raise InputError(f"'{build.folder}' was built for {man['target']}, not {target.name}; "
                         f"check it with --target {man['target']} or build for {target.name}")
    if model is not None and sha256_file(model) != man.get("source_model_sha256"):
        raise InputError(f"'{build.folder}' was built from another model ({man.get('source_model')}), not '{model}'; "
                         "rebuild it or drop the model argument")
    cal = (man.get("calibration") or {}).get("sha256")
    if calib is not None and sha256_file(calib) != cal:
        raise InputError(f"'{build.folder}' was calibrated with another set ({(man.get('calibration') or {}).get('path')}),"
                         f" not '{calib}'; rebuild it with --calib {calib}")


def locate_build(target_name: str, build_dir=None, build_first=False, build_args: dict | None = None):
    """The build folder to check: the one named, or build/<target>; with build_first, build it when missing."""
    from .backends.base import is_build_folder, load_build

    path = Path(build_dir) if build_dir else Path("build") / target_name
    if not path.exists() or (path.is_dir() and not is_build_folder(path)):
        if not build_first:
            raise InputError(f"no build at '{path}': run drsn-edge build --target {target_name} first, "
                             "or pass --build to build it now")
        from .build import build

        build(target_name, out_dir=path, **(build_args or {}))
    return load_build(path)


def check(target_name: str, build_dir=None, device: str | None = None, *, spec=None, model=None, calib=None,
          report: str | None = None, targets_dirs=None, device_opts: dict | None = None, build_first: bool = False,
          warmup: int = 10, progress=None, force: bool = False) -> CheckResult:
    from .devices import open_device
    from .evalspec import EvalSpec

    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    for p in (model, calib):
        if p is not None and not Path(p).is_file():
            raise InputError(f"'{p}' does not exist")
    spec = spec or EvalSpec()
    spec.preflight()
    if report:
        from .outputs import guard_report
        from .report import CHECK_REPORT

        guard_report(report, CHECK_REPORT, [build_dir, model, calib, spec.data], force)
    target_hint = _target_without_device(target_name, targets_dirs)
    url = device or (default_device(target_hint) if target_hint else "local")
    if target_hint is not None:
        from .targets import check_transport

        check_transport(target_hint, url)
    build_args = {"model": model, "targets_dirs": targets_dirs, "spec": spec, **({"calib": calib} if calib else {})}
    if _is_mcu_link(url):  # a board or an emulated one: the build's runner opens the link itself
        if target_hint is None or target_hint.family != "mcu":
            raise InputError(f"--device {url} is for microcontroller targets, not {target_name}")
        build = locate_build(target_name, build_dir, build_first, build_args)
        check_build_matches(build, target_hint, model, calib)
        step("run on the microcontroller")
        res = _run(build, target_hint, url, url, spec, 0)
    else:
        with open_device(url, **(device_opts or {})) as dev:
            from .build import resolve_target

            target = resolve_target(target_name, targets_dirs, dev)
            build = locate_build(target.name if target_name == "jetson" and not build_dir else target_name,
                                 build_dir, build_first, build_args)
            check_build_matches(build, target, model, calib)
            step("run on device")
            res = _run(build, target, dev, url, spec, warmup)
    res.wall_s = time.perf_counter() - t0
    if report:
        from .report import write_report

        res.report = write_report(res.to_json(), report, res.latency_ms.pop("_all"))
    else:
        res.latency_ms.pop("_all")
    return res


MCU_LINKS = ("qemu", "serial")


def _is_mcu_link(url: str) -> bool:
    from .devices.base import device_scheme

    return device_scheme(url) in MCU_LINKS


def _target_without_device(target_name, targets_dirs):
    from .targets import get_target

    return None if target_name == "jetson" else get_target(target_name, targets_dirs)


def _run(build, target, dev, url, spec, warmup) -> CheckResult:
    from .backends.base import warm_up
    from .build import reference_logits
    from .comparison import compare
    from .evaluate import resolve_model
    from .report import latency_summary

    bundle, model_path = resolve_model(_source_model(build))
    import dataclasses

    spec = dataclasses.replace(spec, calibration=(build.manifest.get("calibration") or {}).get("path"))
    ev = spec.windows(bundle.meta)
    facts = dev.info() if hasattr(dev, "info") else {"device": url}
    runner = build.runner(dev)
    try:
        runner.activate()
        warm_up(runner, ev.x, warmup)
        got = runner.infer(ev.x)
        art_guard = runner.guard_result(ev.x, ev.level) if hasattr(runner, "guard_result") else None
        timing = runner.timing()
        sweep = runner.sweep(ev.x) if hasattr(runner, "sweep") else {}
    finally:
        runner.deactivate()
    if got.shape != (len(ev), len(bundle.class_names)):
        raise DeviceError(f"device returned logits of shape {list(got.shape)}, expected {[len(ev), len(bundle.class_names)]}")
    cmp = compare(reference_logits(bundle, ev.x), got, ev.y, ev.noise, ev.snr_db, bundle.class_names)
    lat = latency_summary(timing.latencies_ms)
    th = Thresholds.of(target)
    failures = verdict(cmp.accuracy, cmp.drop_pp, lat["p99"], th)
    exact = _bit_exact(build, ev.x, runner)
    if exact is not None and build.backend == "c" and exact < 1.0:
        failures.append(f"int8 outputs differ from TFLite Micro's on {100 * (1 - exact):.2f} % of the windows")
    lat["_all"] = timing.latencies_ms
    extra = {"bit_exact_with_tflm": exact, "device_counts": _counts(timing, build),
             "latency_is_estimate": "estimate" in timing.source,
             "reference": "TFLite Micro (int8 outputs, bit for bit); accuracy against the float model (PyTorch)"
             if exact is not None else "float model (PyTorch)"}
    return CheckResult(**extra,
        target=target.name, device=url, runtime=runner.name, artifact=str(build.artifact), build_dir=str(build.folder),
        model=model_path, data=ev.description, eval_spec=spec.to_json(), n=len(ev), accuracy=cmp.accuracy,
        reference_accuracy=cmp.reference_accuracy, accuracy_drop_pp=cmp.drop_pp,
        agreement_with_reference=cmp.agreement if exact is None else exact, agreement_with_float=cmp.agreement,
        max_abs_diff=cmp.max_abs_diff, sqnr_db=cmp.sqnr_db, latency_ms=lat,
        timing_source=timing.source,
        throughput={"batch1_per_s": 1000.0 / lat["mean"] if lat["mean"] else None, "sweep": sweep},
        memory=build.manifest.get("memory"), thresholds=asdict(th), passed=not failures, failures=failures,
        device_facts={k: facts.get(k) for k in ("hostname", "arch", "os", "python", "jetson")},
        comparison=cmp.to_json(), domain=_domain(bundle, art_guard, ev, runner.name))


def _domain(bundle, art_guard, ev, runtime: str) -> dict | None:
    """The out-of-domain report: measured by the artifact's own guard where its runner reports one (naming the
    runtime), else by the float model's guard on the host."""
    from .evaluate import artifact_domain_report

    dom = artifact_domain_report(bundle, art_guard, ev.x, ev.noise, ev.snr_db, ev.level)
    if dom is not None and dom.get("measured_on") == "artifact":
        dom["runtime"] = runtime
    return dom


def _bit_exact(build, x, runner) -> float | None:
    """Share of windows whose int8 outputs equal TFLite Micro's (the reference of the .tflite backends)."""
    raw = runner.last_raw
    if raw is None or build.artifact.suffix != ".tflite":
        return None
    from .backends.tflm import TflmRunner, tflm_run

    if isinstance(runner, TflmRunner):  # the runner is the reference interpreter itself: no second run
        return 1.0

    ref = tflm_run(build.artifact.read_bytes(), x, raw=True)
    return float((np.asarray(raw) == ref).all(axis=1).mean())


def _counts(timing, build) -> dict | None:
    """Cycles or instructions per inference (median) and per MAC, where the device counts them."""
    if not timing.counts:
        return None
    per = float(np.median(timing.counts))
    macs = (build.sidecar.get("engine") or {}).get("macs")
    return {"unit": timing.count_unit, "per_inference": per, "per_mac": per / macs if macs else None, "macs": macs,
            "n": len(timing.counts)}


def _source_model(build) -> str:
    from .fileio import sha256_file

    path = build.manifest.get("source_model")
    if not path or not Path(path).is_file():
        raise InputError(f"the float model this build was made from ('{path}') is gone; the check compares with it — "
                         "restore it or rebuild")
    if sha256_file(path) != build.manifest.get("source_model_sha256"):
        raise InputError(f"'{path}' changed since '{build.folder}' was built from it; rebuild the folder")
    return path


def raise_if_failed(result: CheckResult) -> None:
    if not result.passed:
        raise CheckFailedError("check failed: " + "; ".join(result.failures))
