"""The `host` backend: build every runtime this machine runs the model with, measure each on the
evaluation windows (accuracy against the float model, batch-1 latency), keep those within the accuracy
gate, and ship the fastest. The choice, the reason and every candidate's figures go into the sidecar and
the build manifest; the runner follows the recorded choice (nothing is re-measured or rebuilt later).

Candidates (one line each in CANDIDATES): LiteRT fp32 and int8 (XNNPACK, LiteRT's default CPU delegate),
ONNX Runtime fp32 and int8 QDQ, all with one intra-op thread, and the float32 C engine generated from the
same fp32 graph and compiled for this machine (backends/native.py). A candidate this machine cannot make
(no C compiler, an op the engine lacks) is recorded with the reason and left out of the choice.

Every candidate carries the domain guard when the bundle has one: the .tflite's tap outputs with a guard
adapted to LiteRT's own features in the sidecar, the ONNX's guard_score output, and the float C engine's tap
outputs after its logits with the float guard in the sidecar; a check of whichever is kept reports the
out-of-domain share measured on that artifact."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckFailedError, InputError
from .base import Backend, BuildContext, BuildOutput, CommonOptions, warm_up

PRECISIONS = ("auto", "int8", "fp32")


@dataclass
class Options(CommonOptions):
    precision: str = "auto"

    def validate(self, target) -> None:
        super().validate(target)
        if self.precision not in PRECISIONS:
            raise InputError(f"{target.name} takes --precision {', '.join(PRECISIONS)}, got {self.precision}")


def _litert_fp32(ctx, made, where):
    from ..guard_export import tflite_guard
    from .tflite import extra_outputs, model_io, op_modules, strip_names

    fb = strip_names(made["tflite"][1]["float_bytes"])  # the guard's taps (float) after the logits
    inp, out = model_io(fb)
    taps = {"extra_outputs": extra_outputs(fb)}
    return _write(where, "model.fp32.tflite", fb), {
        "input": inp, "output": out, "op_modules": op_modules(made["tflite"][1]["float_bytes"]),
        "guard": tflite_guard(ctx.bundle, fb, taps, ctx.calib_x, source="litert")}


def _litert_int8(ctx, made, where):
    from ..guard_export import tflite_guard

    q, graph = made["tflite"]
    return _write(where, "model.int8.tflite", q), {"input": graph["input"], "output": graph["output"],
                                                   "op_modules": graph["op_modules"], "op_counts": graph["op_counts"],
                                                   "guard": tflite_guard(ctx.bundle, q, graph, ctx.calib_x,
                                                                         source="litert")}


def _ort_fp32(ctx, made, where):
    return _write(where, "model.onnx", made["onnx"]), {}


def _ort_int8(ctx, made, where):
    from ..guard_export import adapt_onnx
    from ..quantize.ptq import DEFAULT_METHOD, quantize_onnx

    q = adapt_onnx(quantize_onnx(made["onnx"], ctx.calib_x, 1, DEFAULT_METHOD), ctx.bundle, ctx.calib_x, 1)
    return _write(where, "model.int8.onnx", q), {"method": DEFAULT_METHOD}


def _native_fp32(ctx, made, where):
    from .native import make_engine

    return make_engine(ctx, where)  # its own export: the guard's raw taps, not the ONNX's score


def _write(where, name: str, data: bytes) -> str:
    from ..fileio import write_bytes

    write_bytes(where / name, data)
    return name


# label → (runtime, precision, maker(ctx, shared intermediates, folder) -> (artifact path in the folder,
# sidecar extras)); the artifact's first path component is what the build keeps when the candidate wins
CANDIDATES = {
    "litert fp32": ("litert", "fp32", _litert_fp32),
    "litert int8": ("litert", "int8", _litert_int8),
    "onnxruntime fp32": ("onnxruntime", "fp32", _ort_fp32),
    "onnxruntime int8 QDQ": ("onnxruntime", "int8", _ort_int8),
    "c engine fp32 (native)": ("native", "fp32", _native_fp32),
}


def make_runner(runtime: str, precision: str, path, op_modules: list[str] | None = None,
                built_for: str | None = None, guard: dict | None = None):
    from .litert import LiteRTRunner
    from .onnxrt import OrtRunner

    if runtime == "native":
        from .native import NativeRunner

        return NativeRunner(path, built_for, guard)
    if runtime == "litert":
        return LiteRTRunner(path.read_bytes(), name=f"litert ({precision}, XNNPACK)", op_modules=op_modules,
                            guard=guard)
    return OrtRunner(path, name=f"onnxruntime ({'int8 QDQ' if precision == 'int8' else 'fp32'})")


def _measure(runner, ev, ref, class_names) -> tuple:
    from ..comparison import compare

    try:
        runner.activate()
        warm_up(runner, ev.x, 20)
        got = runner.infer(ev.x)
        lat = runner.timing().latencies_ms
    finally:
        runner.deactivate()
    return compare(ref, got, ev.y, ev.noise, ev.snr_db, class_names), float(np.median(lat)) * 1000.0, got


def _candidate(ctx, label: str, made: dict, cands, ev, ref) -> dict:
    """Make one candidate in `cands` and measure it; one that cannot be made or verified here is recorded
    with the reason (and never chosen)."""
    from ..errors import DrsnEdgeError

    runtime, precision, maker = CANDIDATES[label]
    rec = {"candidate": label, "runtime": runtime, "precision": precision}
    try:
        ctx.progress(f"make {label}")
        name, extra = maker(ctx, made, cands)
        ctx.progress(f"measure {label}")
        built_for = (extra.get("engine") or {}).get("cpu_signature")
        runner = make_runner(runtime, precision, cands / name, built_for=built_for, guard=extra.get("guard"))
        cmp, p50_us, got = _measure(runner, ev, ref, ctx.bundle.class_names)
        if runtime == "native":
            from .native import verify_engine

            extra["engine"].update(verify_engine(runner, ctx.bundle, ev.x, got, ref))
    except DrsnEdgeError as exc:
        return {**rec, "p50_us": None, "within_gate": False, "failed": str(exc).splitlines()[0]}
    return {**rec, "file": name, "p50_us": round(p50_us, 1), "accuracy": cmp.accuracy, "drop_pp": cmp.drop_pp,
            "agreement": cmp.agreement, "within_gate": cmp.drop_pp <= ctx.options.max_drop + 1e-9,
            "_cmp": cmp, "_extra": extra}


def _shared(ctx) -> dict:
    from ..export import bundle_onnx_bytes
    from .tflite import int8_tflite

    made = {"tflite": int8_tflite(ctx, guard_taps=True)}
    ctx.progress("export")
    made["onnx"] = bundle_onnx_bytes(ctx.bundle, 1)
    return made


def build(ctx: BuildContext) -> BuildOutput:
    from ..build import reference_logits

    ev = ctx.spec.windows(ctx.bundle.meta)
    ref = reference_logits(ctx.bundle, ev.x)
    made = _shared(ctx)
    cands, measured = ctx.out / ".candidates", []
    cands.mkdir()
    for label, (_, precision, _) in CANDIDATES.items():
        if ctx.options.precision in ("auto", precision):
            measured.append(_candidate(ctx, label, made, cands, ev, ref))
    choice = pick(measured, ctx.options.max_drop)
    keep = Path(choice["file"]).parts[0]  # a file, or the folder holding the candidate's files
    (cands / keep).rename(ctx.out / keep)
    shutil.rmtree(cands)
    record = {"runtime": choice["runtime"], "precision": choice["precision"], "candidate": choice["candidate"],
              "reason": choice["reason"],
              "candidates": [{k: v for k, v in m.items() if not k.startswith("_")} for m in measured]}
    _write_sidecar(ctx, choice, record)
    return BuildOutput(artifact=choice["file"], accuracy=choice["_cmp"],
                       details={"choice": record, "op_counts": choice["_extra"].get("op_counts")})


def pick(measured: list[dict], max_drop: float) -> dict:
    """The fastest candidate within the accuracy gate, with the reason in words."""
    ok = [m for m in measured if m["within_gate"]]
    if not ok:
        worst = ", ".join(f"{m['candidate']} " + (f"{m['drop_pp']:.2f} pp" if "failed" not in m else m["failed"])
                          for m in measured)
        raise CheckFailedError(f"no host runtime keeps the accuracy within --max-drop {max_drop:g} pp ({worst})")
    best = dict(min(ok, key=lambda m: m["p50_us"]))
    others = "; ".join(_said(m) for m in measured if m["candidate"] != best["candidate"])
    best["reason"] = (f"fastest of {len(ok)} candidates within the {max_drop:g} pp accuracy gate: batch-1 p50 "
                      f"{best['p50_us']:.0f} µs, drop {best['drop_pp']:.2f} pp; others: {others or 'none'}")
    return best


def _said(m: dict) -> str:
    if "failed" in m:
        return f"{m['candidate']} not usable here ({m['failed']})"
    return f"{m['candidate']} {m['p50_us']:.0f} µs" + ("" if m["within_gate"] else
                                                      f" (drop {m['drop_pp']:.2f} pp, over the gate)")


def _write_sidecar(ctx, choice: dict, record: dict) -> None:
    from ..artifacts import tool_versions, write_sidecar
    from ..fileio import sha256_file

    b, extra = ctx.bundle, dict(choice["_extra"])
    write_sidecar(ctx.out / choice["file"], {
        "kind": {"litert": "tflite", "native": "native"}.get(choice["runtime"], "onnx"), "target": ctx.target.name,
        "backend": "host",
        "runtime": choice["runtime"], "precision": choice["precision"], "choice": record,
        "source_model": str(ctx.model_path), "source_model_sha256": sha256_file(ctx.model_path), "arch": b.arch,
        "class_names": b.class_names, "fs": b.fs, "window": b.window,
        **extra, "input": {**(extra.get("input") or {}), "normalization": b.normalization},
        "tools": tool_versions("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-quantizer", "ai-edge-litert"),
    })


def runner(build, device=None):
    if device is not None and getattr(device, "transport", "local") != "local":
        raise InputError(f"{build.target} builds run on this machine; check them with --device local")
    side = build.sidecar
    return make_runner(side.get("runtime", "litert"), side.get("precision", "int8"), build.artifact,
                       side.get("op_modules"), (side.get("engine") or {}).get("cpu_signature"), side.get("guard"))


BACKEND = Backend(name="host", description="the fastest of LiteRT, ONNX Runtime (fp32/int8) and the native float C "
                  "engine on this machine within the accuracy gate, measured at build time", Options=Options,
                  build=build, runner=runner, suffixes=(".tflite", ".onnx", ".so"))
