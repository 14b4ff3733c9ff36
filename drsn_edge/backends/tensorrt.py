"""TensorRT backend (Jetson): plan the engine build on the host, build on the device.

No machine that runs drsn-edge's CI has TensorRT or a Jetson, so the host side prepares everything
that does not need them — the linted QDQ ONNX, the equivalent `trtexec` command for the target's
TensorRT version, a build script and the self-contained builder (`trt_builder.py`) — and builds the
engine where TensorRT is: on the device over SSH, or locally when this machine has TensorRT and a GPU.
Engines are tied to TensorRT version + GPU (SM) + platform: the sidecar records all three, and loading
an engine elsewhere is refused with both values named.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckFailedError, DeviceError, InputError, MissingDependencyError
from .base import Backend, BuildOutput, RunnerBase
from .onnxrt import Options as _OnnxOptions

BUILDER = Path(__file__).with_name("trt_builder.py")


def _version_tuple(v: str | None) -> tuple[int, ...]:
    if not v:
        return ()
    return tuple(int(p) for p in str(v).split(".")[:2] if p.isdigit())


def trtexec_command(trt_version: str, onnx_name: str, engine_name: str, precision: str = "int8",
                    dla_core: int | None = None, workspace_mb: int = 256, timing_cache: str | None = None,
                    opt_level: int | None = None, strongly_typed: bool = False) -> list[str]:
    """The trtexec command line equivalent to trt_builder.build() for a TensorRT version."""
    ver = _version_tuple(trt_version)
    major = ver[0] if ver else 10
    cmd = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}"]
    typed = strongly_typed or major >= 11
    if typed:
        cmd.append("--stronglyTyped")
    elif precision == "int8":
        cmd += ["--int8", "--fp16"]
    elif precision == "fp16":
        cmd.append("--fp16")
    if ver and ver < (8, 4):
        cmd.append(f"--workspace={workspace_mb}")
    else:
        cmd.append(f"--memPoolSize=workspace:{workspace_mb}M")
    if dla_core is not None:
        cmd += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if opt_level is not None and ver >= (8, 6):
        cmd.append(f"--builderOptimizationLevel={opt_level}")
    return cmd


def build_script(trtexec: list[str], builder_args: list[str]) -> str:
    """A shell script for the device: trtexec when it is on PATH (JetPack puts it in
    /usr/src/tensorrt/bin), else the Python builder."""
    te = " ".join(shlex.quote(a) for a in trtexec[1:])
    py = " ".join(shlex.quote(a) for a in builder_args)
    return f"""#!/bin/sh
# Build the TensorRT engine on the Jetson this folder was copied to. Engines only run on the TensorRT
# version and GPU they were built with.
set -e
cd "$(dirname "$0")"
TRTEXEC=$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)
if [ -x "$TRTEXEC" ]; then
  "$TRTEXEC" {te}
else
  python3 trt_builder.py {py}
fi
"""


def engine_compat_error(sidecar: dict, device: dict) -> str | None:
    """Why an engine cannot load on a device (TensorRT version or SM differ), or None."""
    want_trt, have_trt = sidecar.get("tensorrt"), device.get("tensorrt")
    if want_trt and have_trt and _version_tuple(want_trt) != _version_tuple(have_trt):
        return (f"engine was built with TensorRT {want_trt} but the device has TensorRT {have_trt}; "
                "rebuild the engine on the device")
    want_sm, have_sm = sidecar.get("sm"), device.get("sm")
    if want_sm and have_sm and str(want_sm) != str(have_sm):
        return f"engine was built for SM {want_sm} but the device GPU is SM {have_sm}; rebuild the engine on the device"
    return None


def check_engine_compat(sidecar: dict, device: dict) -> None:
    err = engine_compat_error(sidecar, device)
    if err:
        raise DeviceError(err)


def tensorrt_available() -> str | None:
    """The local TensorRT version when both TensorRT and a CUDA GPU are usable here, else None."""
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError:
        return None
    from .trt_builder import cuda_sm

    return trt.__version__ if cuda_sm() else None


def stage_folder(out_dir: Path, onnx_path: Path, trtexec: list[str], builder_args: list[str]) -> dict:
    """Write trtexec command, build script and builder next to the ONNX."""
    (out_dir / "trtexec.txt").write_text(" ".join(shlex.quote(a) for a in trtexec) + "\n")
    script = out_dir / "build_engine.sh"
    script.write_text(build_script(trtexec, builder_args))
    script.chmod(0o755)
    shutil.copyfile(BUILDER, out_dir / "trt_builder.py")
    return {"trtexec": str(out_dir / "trtexec.txt"), "script": str(script), "builder": str(out_dir / "trt_builder.py"),
            "onnx": str(onnx_path)}


def validate_options(target, precision: str, dla_core: int | None, workspace_mb: int) -> None:
    if precision not in ("int8", "fp16", "fp32"):
        raise InputError(f"unknown precision '{precision}'; use int8, fp16 or fp32")
    if workspace_mb < 16:
        raise InputError(f"--workspace-mb must be at least 16, got {workspace_mb}")
    cores = target.dla_cores or 0
    if dla_core is not None and not (0 <= dla_core < cores):
        raise InputError(f"{target.name} has {cores} DLA core(s); --dla-core {dla_core} is not available"
                         + ("" if cores else " (this Jetson has no DLA)"))
    if dla_core is not None and precision == "fp32":
        raise InputError("DLA runs FP16 or INT8 only; use --precision int8 or fp16 with --dla-core")


def raise_for_builder_error(res: dict) -> dict:
    if "error" in res:
        raise CheckFailedError(f"engine build failed on the device: {res['error']}")
    return res


def build_on_device(device, folder: Path, onnx_name: str, engine_name: str, builder_args: dict) -> dict:
    """Copy the ONNX and the builder to an open device, build there, bring engine and timing cache back
    into `folder` (atomically). Returns the builder's report plus the device's facts."""
    device.put(folder / onnx_name, onnx_name)
    res = device.run_agent("build-engine", dict(builder_args, onnx=onnx_name, engine=engine_name),
                           files=[BUILDER], check=False)
    if "error" in res:
        raise DeviceError(f"engine build on {device.url} failed: {res['error']}"
                          + (f" ({res['hint']})" if res.get("hint") else ""))
    device.get(engine_name, folder / engine_name)
    cache = builder_args.get("timing_cache")
    if cache:
        device.get(cache, folder / cache)
    res["device"] = device.url
    return res


# ---------------------------------------------------------------- `--target jetson`: decided on the device
# one representative version per trtexec flag set, for the table in a portable package's trtexec.txt
TRTEXEC_SERIES = (("8.0-8.3 (JetPack 4.6 ships 8.2)", "8.2"), ("8.4-8.5 (JetPack 5.0-5.1)", "8.5"),
                  ("8.6-10.x (JetPack 6 and 7)", "10.3"), ("11 and later (strongly typed)", "11.0"))
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def is_portable(target) -> bool:
    """`--target jetson` away from any Jetson: the package decides its TensorRT flags on the device."""
    return target.detected is not None and not target.detected.get("is_jetson")


def portable_build_script(onnx_name: str, engine_name: str, options: dict, static_sidecar: dict) -> str:
    """build_engine.sh for any Jetson: detects TensorRT (dpkg, python3 bindings), SM (device tree,
    nvidia-smi, CUDA runtime) and JetPack (nvidia-jetpack package, /etc/nv_tegra_release) when it runs,
    chooses the trtexec flags for that TensorRT version (or falls back to trt_builder.py) and writes the
    engine's sidecar with what it found. `options`: precision, workspace_mb, dla_core, timing_cache,
    opt_level, strongly_typed. `static_sidecar`: the sidecar fields known now (class names, input, hashes)."""
    from ..targets import JETPACK_OF_L4T, TEGRA_SM
    from .build_engine_sh import TEMPLATE

    sidecar_name = Path(engine_name).with_suffix(".json").name
    for name in (onnx_name, engine_name, options.get("timing_cache") or "x"):
        if not _SAFE_NAME.match(name):
            raise InputError(f"file name '{name}' must be letters, digits, '.', '_' or '-' for build_engine.sh")
    opt = {k: "" if options.get(k) is None else str(options[k]) for k in ("dla_core", "opt_level", "timing_cache")}
    fields = {
        "ONNX": onnx_name, "ENGINE": engine_name, "SIDECAR": sidecar_name,
        "PRECISION": shlex.quote(options.get("precision", "int8")),
        "WORKSPACE_MB": str(int(options.get("workspace_mb", 256))),
        "DLA_CORE": opt["dla_core"], "OPT_LEVEL": opt["opt_level"], "TIMING_CACHE": opt["timing_cache"],
        "STRONGLY_TYPED": "1" if options.get("strongly_typed") else "0",
        "SOC_CASES": "\n".join(f"      *{soc}*) SM={sm} ;;" for soc, sm in sorted(TEGRA_SM.items())),
        "L4T_CASES": "\n".join(f"    {major}) JETPACK={jp} ;;" for major, jp in sorted(JETPACK_OF_L4T.items())),
        "STATIC_JSON": json.dumps({"kind": "tensorrt-engine", **static_sidecar}, indent=2).split("\n", 1)[1],
    }
    script = TEMPLATE
    for key, value in fields.items():
        script = script.replace(f"@{key}@", value)
    return script


def portable_trtexec_table(onnx_name: str, engine_name: str, options: dict) -> str:
    """trtexec.txt of a portable package: the command build_engine.sh runs, per TensorRT series."""
    lines = ["# build_engine.sh runs one of these, for the TensorRT version it finds on the Jetson", ""]
    for series, version in TRTEXEC_SERIES:
        cmd = trtexec_command(version, onnx_name, engine_name, options.get("precision", "int8"),
                              options.get("dla_core"), options.get("workspace_mb", 256),
                              options.get("timing_cache"), options.get("opt_level"),
                              bool(options.get("strongly_typed")))
        lines += [f"# TensorRT {series}", " ".join(shlex.quote(a) for a in cmd), ""]
    return "\n".join(lines)


def stage_portable_folder(out_dir: Path, onnx_path: Path, engine_name: str, options: dict, target_name: str) -> dict:
    """Write the run-time-adaptive build_engine.sh, the builder and the trtexec table next to the ONNX."""
    from ..fileio import read_json, sha256_file

    side = read_json(onnx_path.with_suffix(".json"))
    static = {"kind": "tensorrt-engine", "target": target_name, "backend": "tensorrt",
              "precision": options.get("precision", "int8"), "dla_core": options.get("dla_core"),
              "source_onnx": onnx_path.name, "source_onnx_sha256": sha256_file(onnx_path),
              "source_model_sha256": side.get("source_model_sha256"), "class_names": side.get("class_names"),
              "input": side.get("input")}
    script = out_dir / "build_engine.sh"
    script.write_text(portable_build_script(onnx_path.name, engine_name, options, static))
    script.chmod(0o755)
    (out_dir / "trtexec.txt").write_text(portable_trtexec_table(onnx_path.name, engine_name, options))
    shutil.copyfile(BUILDER, out_dir / "trt_builder.py")
    return {"trtexec": str(out_dir / "trtexec.txt"), "script": str(script), "builder": str(out_dir / "trt_builder.py"),
            "onnx": str(onnx_path)}


def build_here(folder: Path, onnx_name: str, engine_name: str, options: dict, facts: dict) -> dict:
    """Build the engine on this Jetson: in this Python when it has TensorRT and a GPU, else by running the
    staged build_engine.sh (trtexec, or trt_builder.py under the system python3). Returns the builder's
    report; MissingDependencyError (exit 3) when the script finds no usable TensorRT."""
    from ..fileio import read_json

    if facts.get("tensorrt_here") and tensorrt_available():
        from .trt_builder import build

        cache = options.get("timing_cache")
        try:
            res = build(str(folder / onnx_name), str(folder / engine_name), options.get("precision", "int8"),
                        options.get("dla_core"), options.get("workspace_mb", 256),
                        str(folder / cache) if cache else None, options.get("opt_level"),
                        bool(options.get("strongly_typed")))
        except Exception as exc:  # TensorRT raises plain exceptions: a failed build, said in one line
            raise CheckFailedError(f"engine build on this Jetson failed: {type(exc).__name__}: {exc}") from None
        return dict(res, device="this machine", sidecar_extra={"built_with": "tensorrt python (drsn-edge)"})
    env = dict(os.environ, **{"DRSN_EDGE_ROOT": facts.get("root") or "/"})
    try:
        proc = subprocess.run(["bash", str(folder / "build_engine.sh")], cwd=folder, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise MissingDependencyError(f"cannot run build_engine.sh with bash here: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        last = lines[-1].removeprefix("build_engine.sh: ") if lines else f"exit status {proc.returncode}"
        if proc.returncode == 3:
            raise MissingDependencyError(last)
        raise CheckFailedError(f"engine build on this Jetson failed: {last}")
    side = read_json(folder / Path(engine_name).with_suffix(".json"))
    extra = {k: side.get(k) for k in ("l4t", "board", "built_with", "command", "detected_from")}
    return {"tensorrt": side.get("tensorrt"), "sm": side.get("sm"), "jetpack": side.get("jetpack"),
            "device": side.get("built_on"), "dla_gpu_fallback_layers": [], "input_shape": None,
            "sidecar_extra": extra, "log": proc.stdout[-2000:]}


def next_step(target, out_dir) -> str:
    """What to do when no engine was built here."""
    if is_portable(target):
        return (f"portable Jetson package in {out_dir}/ (this machine is not a Jetson): finish on the Jetson with "
                f"`scp -r {out_dir} user@jetson:` and `ssh user@jetson ./{Path(out_dir).name}/build_engine.sh` "
                "(it detects TensorRT, SM and JetPack there and picks the flags), or build over SSH: "
                "drsn-edge build --target jetson --device ssh://user@jetson")
    return (f"no TensorRT here: copy {out_dir}/ to the {target.name} and run ./build_engine.sh "
            f"(or pass --device ssh://user@host to build it there)")


# --------------------------------------------------------------------------------------------------
# the backend: QDQ ONNX + engine build plan (+ the engine, where TensorRT is), and its runners

ENGINE = "model.engine"


@dataclass
class Options(_OnnxOptions):
    dla_core: int | None = None
    workspace_mb: int = 256
    opt_level: int | None = None
    strongly_typed: bool = False
    device: str | None = None  # build the engine on this device (ssh://…)

    def validate(self, target) -> None:
        from ..quantize.ptq import METHODS
        from ..validate import count

        if self.precision not in ("int8", "fp16", "fp32"):
            raise InputError(f"unknown precision '{self.precision}'; use int8, fp16 or fp32")
        if self.method not in ("auto", *METHODS):
            raise InputError(f"unknown --method '{self.method}'; choose one of auto, {', '.join(METHODS)}")
        from .base import CommonOptions

        CommonOptions.validate(self, target)
        count("--workspace-mb", self.workspace_mb, lo=16, hi=1 << 20)
        if self.opt_level is not None:
            count("--opt-level", self.opt_level, lo=0, hi=5)
            if _version_tuple(target.tensorrt) and _version_tuple(target.tensorrt) < (8, 6):
                raise InputError(f"--opt-level needs TensorRT ≥ 8.6; {target.name} has TensorRT {target.tensorrt}")
        major = (_version_tuple(target.tensorrt) or (10,))[0]
        if self.strongly_typed and major < 10:
            raise InputError(f"--strongly-typed needs TensorRT ≥ 10; {target.name} has TensorRT {target.tensorrt}")
        validate_options(target, self.precision, self.dla_core, self.workspace_mb)


def _builder_args(o: Options, onnx_name: str, cache: str) -> list[str]:
    args = ["build", "--onnx", onnx_name, "--engine", ENGINE, "--precision", o.precision,
            "--workspace-mb", str(o.workspace_mb), "--timing-cache", cache]
    if o.dla_core is not None:
        args += ["--dla-core", str(o.dla_core)]
    if o.opt_level is not None:
        args += ["--opt-level", str(o.opt_level)]
    if o.strongly_typed:
        args.append("--strongly-typed")
    return args


def build(ctx) -> BuildOutput:
    """The linted QDQ ONNX (measured on the spec), the trtexec command for the target's TensorRT (or, for
    `--target jetson` away from a Jetson, a build script that decides on the device), the self-contained
    builder, and the engine itself where TensorRT is (the device, this Jetson, or this machine)."""
    from ..fileio import read_json, write_json
    from .onnxrt import write_onnx

    o, target = ctx.options, ctx.target
    out = write_onnx(ctx, o.method, o.precision if o.precision != "fp16" else "fp32")
    onnx_path = ctx.out / out.artifact
    side = read_json(onnx_path.with_suffix(".json")) if onnx_path.with_suffix(".json").exists() else {}
    side.update({"target": target.name, "backend": "tensorrt", "engine_for": {"tensorrt": target.tensorrt,
                                                                               "sm": target.sm, "jetpack": target.jetpack}})
    side.setdefault("class_names", ctx.bundle.class_names)
    side.setdefault("fs", ctx.bundle.fs)
    side.setdefault("window", ctx.bundle.window)
    side.setdefault("input", {"normalization": ctx.bundle.normalization})
    write_json(onnx_path.with_suffix(".json"), side)
    opts = _engine_options(o, f"timing-{target.name}.cache")
    trtexec = trtexec_command(target.tensorrt, out.artifact, ENGINE, o.precision, o.dla_core, o.workspace_mb,
                              opts["timing_cache"], o.opt_level, o.strongly_typed)
    if target.detected is not None:  # `--target jetson` resolved here: build_engine.sh adapts on the device
        stage_portable_folder(ctx.out, onnx_path, ENGINE, opts, target.name)
    else:
        stage_folder(ctx.out, onnx_path, trtexec, _builder_args(o, out.artifact, opts["timing_cache"]))
    engine = _build_engine(ctx, out.artifact, opts)
    if engine:
        _write_engine_sidecar(ctx, engine, onnx_path, side)
    out_dir = ctx.out_dir or ctx.out
    out.details.update({"trtexec": None if is_portable(target) else " ".join(trtexec), "tensorrt": target.tensorrt,
                        "jetpack": target.jetpack, "sm": target.sm, "engine": engine,
                        "resolved": (target.detected or {}).get("summary"),
                        "next_step": None if engine else next_step(target, out_dir)})
    return out


def _engine_options(o, cache: str) -> dict:
    return {"precision": o.precision, "dla_core": o.dla_core, "workspace_mb": o.workspace_mb, "timing_cache": cache,
            "opt_level": o.opt_level, "strongly_typed": o.strongly_typed}


def _build_engine(ctx, onnx_name: str, opts: dict) -> dict | None:
    o = ctx.options
    if ctx.device is not None:
        ctx.progress("build on device")
        return build_on_device(ctx.device, ctx.out, onnx_name, ENGINE, opts)
    detected = ctx.target.detected
    if detected and detected.get("is_jetson"):  # on a Jetson: build with what is here
        ctx.progress("build engine here")
        return build_here(ctx.out, onnx_name, ENGINE, opts, detected)
    if not tensorrt_available():
        return None
    from .trt_builder import build as local_build

    ctx.progress("build engine")
    cwd = os.getcwd()
    os.chdir(ctx.out)
    try:
        try:
            res = local_build(onnx_name, ENGINE, o.precision, o.dla_core, o.workspace_mb, opts["timing_cache"],
                              o.opt_level, o.strongly_typed)
        except Exception as exc:  # TensorRT raises plain exceptions; report them as a failed build
            res = {"error": f"{type(exc).__name__}: {exc}"}
        return raise_for_builder_error(res)
    finally:
        os.chdir(cwd)


def _write_engine_sidecar(ctx, engine: dict, onnx_path: Path, side: dict) -> None:
    from ..artifacts import tool_versions, write_sidecar
    from ..fileio import sha256_file

    write_sidecar(ctx.out / ENGINE, {
        "kind": "tensorrt-engine", "target": ctx.target.name, "backend": "tensorrt",
        "precision": ctx.options.precision, "tensorrt": engine.get("tensorrt"), "sm": engine.get("sm"),
        "jetpack": ctx.target.jetpack, "dla_core": ctx.options.dla_core,
        "dla_gpu_fallback_layers": engine.get("dla_gpu_fallback_layers", []),
        "input_shape": engine.get("input_shape"), "source_onnx": onnx_path.name,
        "source_onnx_sha256": sha256_file(onnx_path), "source_model_sha256": side.get("source_model_sha256"),
        "class_names": side.get("class_names"), "fs": side.get("fs"), "window": side.get("window"),
        "input": side.get("input"), "built_on": engine.get("device"), "tools": tool_versions(),
        **engine.get("sidecar_extra", {}),
    })


class EngineRunner(RunnerBase):
    """A TensorRT engine on a device with TensorRT, through the device agent (Polygraphy / TensorRT there).
    The build folder's engine is used when it matches the device's TensorRT and SM; otherwise the engine is
    built there from the build folder's QDQ ONNX (same file, same flags). The engine keeps the ONNX's output
    names: the logits and, where the ONNX has the domain guard, guard_score are fetched by name."""

    timing_source = "device (TensorRT, agent)"

    def __init__(self, build, device):
        super().__init__()
        from ..guard_export import onnx_file_guard

        self.build, self.device = build, device
        self.name = "tensorrt"
        self.engine_info: dict = {}
        self._loaded = False
        onnx = build.file(build.manifest["artifact"])  # the QDQ ONNX the engine is built from
        self.logits_output, self.guard_meta = onnx_file_guard(onnx) if onnx.suffix == ".onnx" and onnx.is_file() \
            else (None, None)

    def activate(self) -> None:
        from ..fileio import read_json

        super().activate()
        if self._loaded:
            return
        engine = self.build.file(ENGINE)
        if engine.is_file():
            side = read_json(engine.with_suffix(".json")) if engine.with_suffix(".json").is_file() else {}
            check_engine_compat(side, self.device.run_agent("trt-info", {}, files=[BUILDER]))
            self.device.put(engine, ENGINE)
            self.engine_info = {"tensorrt": side.get("tensorrt"), "sm": side.get("sm"), "engine": "prebuilt"}
        else:
            import tempfile

            onnx = self.build.manifest["artifact"]
            with tempfile.TemporaryDirectory() as tmp:
                import shutil

                shutil.copyfile(self.build.file(onnx), Path(tmp) / onnx)
                opts = self.build.manifest.get("options") or {}
                self.engine_info = build_on_device(self.device, Path(tmp), onnx, ENGINE, {
                    "precision": opts.get("precision", "int8"), "workspace_mb": opts.get("workspace_mb", 256)})
        self._loaded = True

    def infer(self, x):
        from .onnxrt import agent_infer

        if not self.active:
            self.activate()
        return agent_infer(self, "run-engine", {"engine": ENGINE, "warmup": 20, "logits_output": self.logits_output}, x)


STAND_IN = "onnxruntime (standing in for TensorRT: no TensorRT on the device)"


def device_has_tensorrt(device) -> bool:
    if device is None:
        return bool(tensorrt_available())
    facts = device.info()
    return bool(((facts.get("modules") or {}).get("tensorrt") or {}).get("available"))


def runner(build, device=None):
    """The engine where the device has TensorRT; otherwise the same QDQ ONNX in ONNX Runtime, labelled as a
    stand-in. An engine named as the artifact needs TensorRT on the device."""
    from .onnxrt import onnx_runner

    has_trt = device is not None and device_has_tensorrt(device)
    if build.artifact.name.endswith(".engine") and not has_trt:
        raise DeviceError(f"{getattr(device, 'url', 'this machine')} has no TensorRT to run the engine "
                          f"{build.artifact}; check the build folder instead (ONNX Runtime stands in) or on the "
                          "Jetson it was built for")
    if has_trt:
        return EngineRunner(build, device)
    onnx = build.file(build.manifest["artifact"])
    return onnx_runner(build, device, name=STAND_IN, path=onnx)


BACKEND = Backend(name="tensorrt", description="TensorRT engine on NVIDIA Jetson (QDQ ONNX built on the device)",
                  Options=Options, build=build, runner=runner, suffixes=(".onnx", ".engine"))
