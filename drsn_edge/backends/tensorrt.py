"""TensorRT backend (Jetson): plan the engine build on the host, build on the device.

No machine that runs drsn-edge's CI has TensorRT or a Jetson, so the host side prepares everything
that does not need them — the linted QDQ ONNX, the equivalent `trtexec` command for the target's
TensorRT version, a build script and the self-contained builder (`trt_builder.py`) — and builds the
engine where TensorRT is: on the device over SSH, or locally when this machine has TensorRT and a GPU.
Engines are tied to TensorRT version + GPU (SM) + platform: the sidecar records all three, and loading
an engine elsewhere is refused with both values named.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from ..errors import CheckFailedError, DeviceError, InputError

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
