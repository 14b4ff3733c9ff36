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
from pathlib import Path

from ..errors import CheckFailedError, DeviceError, InputError, MissingDependencyError

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
