"""The `c` backend: the interpreter-free C engine generated from the verified int8 .tflite (drsn_edge.cengine),
bit-exact with TFLite Micro, inside a small firmware that speaks the serial protocol. `build` verifies it
against TFLM on every evaluation window, compiles it for the target's core with arm-none-eabi-gcc (flash and
RAM measured from the linked image, refused if it does not fit) and writes the firmware folder; runners run
it on this machine (the same C, compiled with gcc), on an emulated Cortex-M (QEMU) or on a board (serial)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..errors import CheckFailedError, InputError
from .base import Backend, BuildOutput, RunnerBase
from .tflite import Int8Options as Options
from .tflite import Int8RunnerBase

FIRMWARE = "firmware"
ELF = "firmware.elf"
PROFILE_ELF = "firmware.profile.elf"  # the same engine with per-kernel markers (drsn-edge profile), emulated boards
DSP_CPUS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")  # cores with the DSP (SIMD) extension


def _verify_bit_exact(q: bytes, engine_dir: Path, ev) -> tuple[np.ndarray, np.ndarray]:
    """Raw int8 outputs of TFLM (the reference) and of the C engine on this machine; refuse any difference."""
    from ..cengine import HostEngine
    from .tflite import check_integer_only, quantize_input
    from .tflm import tflm_outputs_raw

    outs = tflm_outputs_raw(q, ev.x)
    micro, micro_taps = outs[0], np.concatenate(outs[1:], axis=1) if len(outs) > 1 else None
    io = check_integer_only(q)["input"]
    xq = quantize_input(ev.x.reshape(len(ev.x), -1), float(io["scale"]), int(io["zero_point"]))
    mine, taps = HostEngine(engine_dir).run_taps(xq)
    same = (mine == micro).all(axis=1)
    if micro_taps is not None:  # the guard's taps too: the device scores what TFLM would give
        same &= (taps == micro_taps).all(axis=1)
    if not same.all():
        raise CheckFailedError(f"the C engine differs from TFLite Micro on {int((~same).sum())} of {len(same)} "
                               "windows; build with --engine tflm and report this model")
    return micro, mine


def _compile_for_target(ctx, engine_dir: Path) -> dict:
    """Link the firmware for the target's core and measure flash and RAM from the image: the QEMU board's
    image for emulated targets, a fit image at the board's flash and RAM budget for real Cortex-M boards."""
    from ..firmware.cfirmware import QEMU_BOARDS, build_qemu_elf, build_fit_elf

    t = ctx.target
    machine = (t.device or {}).get("machine") or t.hardware.get("qemu_machine")
    if machine in QEMU_BOARDS:
        return dict(build_qemu_elf(engine_dir, t, ctx.out / ELF), image=ELF,
                    profile_image=_profile_image(ctx, engine_dir))
    if not str(t.hardware.get("cpu", "")).startswith("cortex-m"):
        return {"flash_bytes": None, "ram_bytes": None, "image": None,
                "note": f"{t.hardware.get('cpu')} is built with its vendor toolchain (see the board file); "
                        "flash and RAM are not measured here"}
    return dict(build_fit_elf(engine_dir, t, ctx.out / "fit.elf"), image=None)


def _profile_image(ctx, engine_dir: Path) -> str | None:
    """The profiling firmware next to the normal one (drsn-edge profile runs it); a build whose profiling
    image alone does not fit the emulated board's memory goes on without it."""
    from ..firmware.cfirmware import build_qemu_elf

    try:
        build_qemu_elf(engine_dir, ctx.target, ctx.out / PROFILE_ELF, profile=True)
    except CheckFailedError as exc:
        ctx.progress(f"no profiling firmware: {exc}")
        return None
    return PROFILE_ELF


def memory_fit(target, measured: dict, engine: dict) -> dict:
    fb, rb = target.flash_bytes, target.ram_budget_bytes
    flash, ram = measured.get("flash_bytes"), measured.get("ram_bytes")
    fits = (flash is None or flash <= fb) and (ram is None or ram <= rb)
    return {"flash_bytes": flash, "flash_budget_bytes": fb, "ram_bytes": ram, "ram_budget_bytes": rb,
            "weight_bytes": engine["weight_bytes"], "activation_bytes": engine["arena_bytes"],
            "measured": flash is not None, "source": "linked image (arm-none-eabi-size)" if flash is not None
            else measured.get("note"), "sections": measured.get("sections"), "fits": fits}


def build(ctx) -> BuildOutput:
    from ..build import reference_logits
    from ..cengine import generate
    from ..comparison import compare
    from ..firmware.cfirmware import board_for_target, copy_firmware_sources
    from .tflite import calibration_details, int8_tflite, write_tflite
    from .tflm import check_ops_supported

    from ..guard_export import tflite_guard

    q, graph = int8_tflite(ctx, guard_taps=True)
    check_ops_supported(q)
    fw = ctx.out / FIRMWARE
    dsp = ctx.target.hardware.get("cpu") in DSP_CPUS
    guard = tflite_guard(ctx.bundle, q, graph, ctx.calib_x)  # TFLM's taps: the engine's, bit for bit
    ctx.progress("generate C")
    engine = generate(q, fw, dsp=dsp, guard=guard)
    ctx.progress("verify against TFLite Micro")
    ev = ctx.spec.windows(ctx.bundle.meta)
    micro, mine = _verify_bit_exact(q, fw, ev)
    copy_firmware_sources(fw, board_for_target(ctx.target))
    ctx.progress("compile for the target")
    measured = _compile_for_target(ctx, fw)
    memory = memory_fit(ctx.target, measured, engine)
    if not memory["fits"]:
        raise CheckFailedError(
            f"model does not fit {ctx.target.name}: flash {memory['flash_bytes']} B of {memory['flash_budget_bytes']} B, "
            f"RAM {memory['ram_bytes']} B of {memory['ram_budget_bytes']} B budget (measured from the linked image)")
    (ctx.out / "fit.elf").unlink(missing_ok=True)
    s_out, z_out = float(graph["output"]["scale"]), int(graph["output"]["zero_point"])
    acc = compare(reference_logits(ctx.bundle, ev.x), (mine.astype(np.float32) - z_out) * s_out, ev.y, ev.noise,
                  ev.snr_db, ctx.bundle.class_names)
    acc.bit_exact = float((mine == micro).all(axis=1).mean())
    info = {k: engine[k] for k in ("arena_bytes", "weight_bytes", "macs", "crc", "dsp", "kernels")}
    name = write_tflite(ctx, q, graph, "c", engine=info, memory=memory, firmware=FIRMWARE,
                        image=measured.get("image"), profile_image=measured.get("profile_image"), guard=guard)
    return BuildOutput(artifact=name, accuracy=acc, memory=memory,
                       details={"engine": "c", "bit_exact_with_tflm": acc.bit_exact, "macs": engine["macs"],
                                "dsp": dsp, "kernels": len(engine["kernels"]), "image": measured.get("image"),
                                "firmware": f"{FIRMWARE}/", "op_counts": graph["op_counts"],
                                **calibration_details(graph)})


class HostEngineRunner(Int8RunnerBase, RunnerBase):
    """The generated C engine compiled for this machine (gcc), called in-process."""

    def __init__(self, build):
        RunnerBase.__init__(self)
        from ..cengine import HostEngine

        self.name = "c engine (int8, host)"
        self.engine = HostEngine(build.file(FIRMWARE))
        self.guard_meta = build.sidecar.get("guard")  # scored by the engine's own drsn_guard.c
        io_in, io_out = build.sidecar["input"], build.sidecar["output"]
        self.n_in = int(np.prod(io_in["shape"]))
        self._setup_io((io_in["scale"], io_in["zero_point"]), (io_out["scale"], io_out["zero_point"]), np.int8)

    def _infer_one(self, x):
        xq = self._quantize(x.reshape(1, self.n_in))
        if not self.guard_meta:
            return self._dequantize(self.engine.run_raw(xq))
        logits, taps = self.engine.run_taps(xq)
        self._guard = self.engine.guard_score(taps)
        return self._dequantize(logits)


def runner(build, device=None):
    if device is None or getattr(device, "transport", None) == "local":
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            raise InputError("the C engine runs on this machine through gcc; install gcc or check on the board")
        return HostEngineRunner(build)
    if isinstance(device, str):
        from ..devices.mcu import build_runner

        return build_runner(build, device)
    raise InputError(f"{build.target} runs on a microcontroller: use --device qemu, serial://PORT or local")


BACKEND = Backend(name="c", description="generated C engine (bit-exact with TFLite Micro) for microcontrollers",
                  Options=Options, build=build, runner=runner, suffixes=(".tflite",))
