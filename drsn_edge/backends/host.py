"""The `host` backend: build every runtime this machine runs the model with, measure each on the
evaluation windows (accuracy against the float model, batch-1 latency), keep those within the accuracy
gate, and ship the fastest. The choice, the reason and every candidate's figures go into the sidecar and
the build manifest; the runner follows the recorded choice (nothing is re-measured or rebuilt later).

Candidates (one line each in CANDIDATES): LiteRT fp32 and int8 (XNNPACK, LiteRT's default CPU delegate)
and ONNX Runtime fp32 and int8 QDQ, all with one intra-op thread."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

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


def _litert_fp32(ctx, made):
    from .tflite import model_io, op_modules, strip_names

    fb = made["tflite"][1]["float_bytes"]
    inp, out = model_io(fb)
    return "model.fp32.tflite", strip_names(fb), {"input": inp, "output": out, "op_modules": op_modules(fb)}


def _litert_int8(ctx, made):
    q, graph = made["tflite"]
    return "model.int8.tflite", q, {"input": graph["input"], "output": graph["output"],
                                    "op_modules": graph["op_modules"], "op_counts": graph["op_counts"]}


def _ort_fp32(ctx, made):
    return "model.onnx", made["onnx"], {}


def _ort_int8(ctx, made):
    from ..quantize.ptq import DEFAULT_METHOD, quantize_onnx

    return "model.int8.onnx", quantize_onnx(made["onnx"], ctx.calib_x, 1, DEFAULT_METHOD), {"method": DEFAULT_METHOD}


# label → (runtime, precision, maker(ctx, shared intermediates) -> (file name, bytes, sidecar extras))
CANDIDATES = {
    "litert fp32": ("litert", "fp32", _litert_fp32),
    "litert int8": ("litert", "int8", _litert_int8),
    "onnxruntime fp32": ("onnxruntime", "fp32", _ort_fp32),
    "onnxruntime int8 QDQ": ("onnxruntime", "int8", _ort_int8),
}


def make_runner(runtime: str, precision: str, path, op_modules: list[str] | None = None):
    from .litert import LiteRTRunner
    from .onnxrt import OrtRunner

    if runtime == "litert":
        return LiteRTRunner(path.read_bytes(), name=f"litert ({precision}, XNNPACK)", op_modules=op_modules)
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
    return compare(ref, got, ev.y, ev.noise, ev.snr_db, class_names), float(np.median(lat)) * 1000.0


def _shared(ctx) -> dict:
    from ..export import bundle_onnx_bytes
    from .tflite import int8_tflite

    made = {"tflite": int8_tflite(ctx)}
    ctx.progress("export")
    made["onnx"] = bundle_onnx_bytes(ctx.bundle, 1)
    return made


def build(ctx: BuildContext) -> BuildOutput:
    from ..build import reference_logits
    from ..fileio import write_bytes

    ev = ctx.spec.windows(ctx.bundle.meta)
    ref = reference_logits(ctx.bundle, ev.x)
    made = _shared(ctx)
    cands, measured = ctx.out / ".candidates", []
    cands.mkdir()
    for label, (runtime, precision, maker) in CANDIDATES.items():
        if ctx.options.precision not in ("auto", precision):
            continue
        ctx.progress(f"measure {label}")
        name, data, extra = maker(ctx, made)
        write_bytes(cands / name, data)
        cmp, p50_us = _measure(make_runner(runtime, precision, cands / name), ev, ref, ctx.bundle.class_names)
        measured.append({"candidate": label, "runtime": runtime, "precision": precision, "file": name,
                         "p50_us": round(p50_us, 1), "accuracy": cmp.accuracy, "drop_pp": cmp.drop_pp,
                         "agreement": cmp.agreement, "within_gate": cmp.drop_pp <= ctx.options.max_drop + 1e-9,
                         "_cmp": cmp, "_extra": extra})
    choice = pick(measured, ctx.options.max_drop)
    (cands / choice["file"]).rename(ctx.out / choice["file"])
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
        worst = ", ".join(f"{m['candidate']} {m['drop_pp']:.2f} pp" for m in measured)
        raise CheckFailedError(f"no host runtime keeps the accuracy within --max-drop {max_drop:g} pp ({worst})")
    best = dict(min(ok, key=lambda m: m["p50_us"]))
    others = "; ".join(f"{m['candidate']} {m['p50_us']:.0f} µs" + ("" if m["within_gate"] else
                                                                   f" (drop {m['drop_pp']:.2f} pp, over the gate)")
                       for m in measured if m["candidate"] != best["candidate"])
    best["reason"] = (f"fastest of {len(ok)} candidates within the {max_drop:g} pp accuracy gate: batch-1 p50 "
                      f"{best['p50_us']:.0f} µs, drop {best['drop_pp']:.2f} pp; others: {others or 'none'}")
    return best


def _write_sidecar(ctx, choice: dict, record: dict) -> None:
    from ..artifacts import tool_versions, write_sidecar
    from ..fileio import sha256_file

    b, extra = ctx.bundle, dict(choice["_extra"])
    write_sidecar(ctx.out / choice["file"], {
        "kind": "tflite" if choice["runtime"] == "litert" else "onnx", "target": ctx.target.name, "backend": "host",
        "runtime": choice["runtime"], "precision": choice["precision"], "choice": record,
        "source_model": str(ctx.model_path), "source_model_sha256": sha256_file(ctx.model_path), "arch": b.arch,
        "class_names": b.class_names, "fs": b.fs, "window": b.window,
        **extra, "input": {**(extra.get("input") or {}), "normalization": b.normalization},
        "tools": tool_versions("torch", "onnxruntime", "litert-torch", "ai-edge-quantizer", "ai-edge-litert"),
    })


def runner(build, device=None):
    if device is not None and getattr(device, "transport", "local") != "local":
        raise InputError(f"{build.target} builds run on this machine; check them with --device local")
    side = build.sidecar
    return make_runner(side.get("runtime", "litert"), side.get("precision", "int8"), build.artifact,
                       side.get("op_modules"))


BACKEND = Backend(name="host", description="the fastest of LiteRT and ONNX Runtime (fp32/int8) on this machine "
                  "within the accuracy gate, measured at build time", Options=Options, build=build, runner=runner,
                  suffixes=(".tflite", ".onnx"))
