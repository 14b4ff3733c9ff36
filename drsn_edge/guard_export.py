"""The domain guard inside the exported artifacts.

ONNX (float and int8 QDQ builds): the deploy graph gets one output per guard tap (DeployNet's taps), and this
module joins them into two more graph outputs after the logits:
  guard_features  float [N, D]  the taps concatenated (in an int8 build: computed from its own int8 activations)
  guard_score     float [N]     min_k |W f − m_k|², the squared Mahalanobis distance to the nearest class mean
                                (W, m: Guard.whitening), a float MatMul and a few element-wise ops
The threshold, quantile and taps travel in the model's metadata (`drsn_edge.guard`) and in the sidecar, so a
runner needs nothing but the artifact. A bundle without a guard exports the logits alone.
"""

from __future__ import annotations

import json

import numpy as np

FEATURES = "guard_features"
SCORE = "guard_score"
META_KEY = "drsn_edge.guard"


def tap_output(tap: str) -> str:
    return f"guard.{tap}"


def guard_meta(guard) -> dict:
    """What a runner needs besides the score: threshold, quantile and the feature layout."""
    return {**guard.layout(),
            "signal_checks": "flat and clipped windows, and raw windows whose level is outside `level`, are out of "
                             "domain (checked on the input window by the runner, before normalization for the level)"}


def attach_onnx(model_bytes: bytes, guard) -> bytes:
    """Join the graph's tap outputs (guard.<tap>) into guard_features and add guard_score; the graph's outputs
    become [logits, guard_features, guard_score]. Works on float and QDQ graphs alike (float ops, after the
    int8 part)."""
    from onnx import TensorProto, helper, numpy_helper

    from .deps import onnx

    m = onnx().load_from_string(model_bytes)
    g = m.graph
    outs = {o.name: o for o in g.output}
    names = [tap_output(t) for t in guard.taps]
    missing = [n for n in names if n not in outs]
    if missing:
        raise ValueError(f"the graph has no output {missing[0]} (export it with the guard's taps)")
    w, means = guard.whitening()
    k, d = means.shape
    consts = {"guard_wt": w.T.astype(np.float32), "guard_means": means.astype(np.float32),
              "guard_sum_axes": np.array([2], np.int64), "guard_unsq_axes": np.array([1], np.int64)}
    g.initializer.extend(numpy_helper.from_array(v, name=n) for n, v in consts.items())
    g.node.extend([
        helper.make_node("Concat", names, [FEATURES], axis=1, name="/guard/Concat"),
        helper.make_node("MatMul", [FEATURES, "guard_wt"], ["guard_z"], name="/guard/MatMul"),
        helper.make_node("Unsqueeze", ["guard_z", "guard_unsq_axes"], ["guard_z3"], name="/guard/Unsqueeze"),
        helper.make_node("Sub", ["guard_z3", "guard_means"], ["guard_d"], name="/guard/Sub"),
        helper.make_node("Mul", ["guard_d", "guard_d"], ["guard_d2"], name="/guard/Mul"),
        helper.make_node("ReduceSum", ["guard_d2", "guard_sum_axes"], ["guard_dist"], keepdims=0, name="/guard/ReduceSum"),
        helper.make_node("ReduceMin", ["guard_dist"], [SCORE], axes=[1], keepdims=0, name="/guard/ReduceMin"),
    ])
    batch = outs[names[0]].type.tensor_type.shape.dim[0].dim_value or None
    logits = [o for o in g.output if not o.name.startswith("guard.")]
    del g.output[:]
    g.output.extend(logits)
    g.output.extend([helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [batch, d]),
                     helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, [batch])])
    props = {p.key: p.value for p in m.metadata_props}
    props[META_KEY] = json.dumps(guard_meta(guard))
    del m.metadata_props[:]
    for key, value in props.items():
        m.metadata_props.add(key=key, value=value)
    return m.SerializeToString()


def _guard_of(output_names: list[str], props: dict) -> dict | None:
    meta = props.get(META_KEY) if SCORE in output_names else None
    return json.loads(meta) if meta else None


def onnx_guard(session) -> dict | None:
    """The guard metadata of an ONNX Runtime session whose model carries guard_score, else None."""
    return _guard_of([o.name for o in session.get_outputs()], session.get_modelmeta().custom_metadata_map)


def onnx_file_guard(path) -> tuple[str, dict | None]:
    """(logits output name, guard metadata or None) of an ONNX file, read with onnx (weights not loaded): for
    runners that run the file elsewhere (the device agent, a TensorRT engine built from it)."""
    from .deps import onnx

    m = onnx().load_model(str(path), load_external_data=False)
    names = [o.name for o in m.graph.output]
    return names[0], _guard_of(names, {p.key: p.value for p in m.metadata_props})


def flags(score: np.ndarray, meta: dict, x: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
    """In-domain flags from an artifact's scores (its guard metadata `meta`: threshold, level range) and the
    windows themselves: flat and clipped windows are out, and so are raw windows whose level (guard.window_level,
    when given) is outside the guard's range."""
    from .guard import level_ok, signal_flags

    flat, clipped = signal_flags(x)
    return ((np.asarray(score) <= float(meta["threshold"])) & ~flat & ~clipped
            & level_ok(meta.get("level"), level, len(x)))


def agreement(art_score: np.ndarray, art_ok: np.ndarray, ref_score: np.ndarray, ref_ok: np.ndarray,
              threshold: float, margin: float = 0.25) -> dict:
    """How the artifact's guard matches the float model's: share of equal flags overall, and among windows
    whose float score is not within ±margin of the threshold (there an int8 feature error cannot flip the flag
    unless it is that large); median relative score difference."""
    a, r = np.asarray(art_score, float), np.asarray(ref_score, float)
    same = np.asarray(art_ok) == np.asarray(ref_ok)
    far = np.abs(r - threshold) > margin * threshold
    rel = np.abs(a - r) / np.maximum(np.abs(r), 1e-12)
    return {"flag_agreement": float(same.mean()) if len(same) else 1.0,
            "flag_agreement_far_from_threshold": float(same[far].mean()) if far.any() else 1.0,
            "windows_far_from_threshold": int(far.sum()), "margin": margin,
            "median_rel_score_diff": float(np.median(rel)) if len(rel) else 0.0,
            "p95_rel_score_diff": float(np.quantile(rel, 0.95)) if len(rel) else 0.0}


ADAPT_WINDOWS = 512  # calibration windows used to measure the int8 features' error (more adds time, not accuracy)


def adapt(guard, float_feats: np.ndarray, art_feats: np.ndarray):
    """The guard for an artifact whose features are the float ones plus an error e (int8 rounding): the
    class means move by the mean error, and its covariance is added to the shared one (Σ' = Σ + cov(e)), so
    an in-domain window's score keeps the distribution it had in float and the threshold stays valid.
    Measured on windows both models ran (the calibration windows)."""
    from .guard import Guard

    e = np.asarray(art_feats, np.float64) - np.asarray(float_feats, np.float64)
    bias = e.mean(axis=0)
    noise = np.cov((e - bias).T) if len(e) > 1 else np.zeros((e.shape[1],) * 2)
    cov = np.linalg.inv(guard.precision) + np.atleast_2d(noise)
    info = {**guard.info, "adapted_to_artifact": {"windows": int(len(e)), "mean_abs_bias": float(np.abs(bias).mean()),
                                                 "mean_noise_std": float(np.sqrt(np.clip(np.diag(np.atleast_2d(noise)), 0, None)).mean())}}
    return Guard(means=guard.means + bias, precision=np.linalg.inv(cov), threshold=guard.threshold,
                 quantile=guard.quantile, info=info, taps=list(guard.taps), tap_dims=list(guard.tap_dims),
                 level=guard.level)


def onnx_features(model_bytes: bytes, x: np.ndarray, batch: int) -> np.ndarray:
    from .export import ort_session, run_ort

    return run_ort(ort_session(model_bytes), x, batch, FEATURES)


def adapt_onnx(model_bytes: bytes, bundle, calib_x: np.ndarray, batch: int, guard=None,
               float_source: bytes | None = None) -> bytes:
    """An int8 ONNX with a guard: its score constants refitted to its own features (adapt) on calibration
    windows; unchanged without a guard. The guard is the bundle's, with the float features of the bundle's
    model; or `guard` with the features of the float graph `float_source` it was quantized from (after
    quantization-aware fine-tuning the weights, and so the features, differ from the bundle's)."""
    from onnx import numpy_helper

    from .deps import onnx
    from .guard import from_meta, guard_features

    g = guard if guard is not None else from_meta(bundle.meta)
    m = onnx().load_from_string(model_bytes)
    if g is None or FEATURES not in [o.name for o in m.graph.output]:
        return model_bytes
    x = np.asarray(calib_x[:ADAPT_WINDOWS], np.float32)
    ref = onnx_features(float_source, x, batch) if float_source is not None else guard_features(g, bundle.model, x)
    g2 = adapt(g, ref, onnx_features(model_bytes, x, batch))
    w, means = g2.whitening()
    new = {"guard_wt": w.T.astype(np.float32), "guard_means": means.astype(np.float32)}
    for init in m.graph.initializer:
        if init.name in new:
            init.CopyFrom(numpy_helper.from_array(new[init.name], name=init.name))
    for p in m.metadata_props:
        if p.key == META_KEY:
            p.value = json.dumps({**json.loads(p.value), "adapted_to_artifact": g2.info["adapted_to_artifact"]})
    return m.SerializeToString()


# ---------------------------------------------------------------------------------------------- TFLite / TFLM
def tflite_tap_features(raw_outputs: list[np.ndarray], outputs: list[dict]) -> np.ndarray:
    """The tap outputs of a .tflite (after the logits), dequantized with each one's scale and zero point (float
    taps, which have none, as they are) and concatenated: the float computation the guard score runs on."""
    parts = [np.asarray(r, np.float64).reshape(len(r), -1) for r in raw_outputs]
    parts = [p if o.get("scale") is None else (p - float(o["zero_point"] or 0)) * float(o["scale"])
             for p, o in zip(parts, outputs)]
    return np.concatenate(parts, axis=1)


def _tflm_outputs(q: bytes, x: np.ndarray, arena: int | None) -> list[np.ndarray]:
    from .backends.tflm import tflm_outputs_raw

    return tflm_outputs_raw(q, x, arena)


def _litert_outputs(q: bytes, x: np.ndarray, arena: int | None) -> list[np.ndarray]:
    from .backends.tflite import litert_outputs_raw

    return litert_outputs_raw(q, x)


# the interpreter whose tap outputs a .tflite's guard is adapted to: the one that runs the artifact
# (name -> run(tflite bytes, windows, arena) -> every output, logits first)
TAP_SOURCES = {"tflm": _tflm_outputs, "litert": _litert_outputs}


def tflite_guard(bundle, q: bytes, graph: dict, calib_x: np.ndarray, arena: int | None = None,
                 source: str = "tflm") -> dict | None:
    """The guard of a .tflite with tap outputs, for its sidecar: adapted (adapt) to the tap features that the
    interpreter `source` (TAP_SOURCES: TFLite Micro for the microcontroller builds, LiteRT for the LiteRT
    ones) computes on the calibration windows; None without a guard."""
    from .guard import from_meta, guard_features

    g = from_meta(bundle.meta)
    outs = graph.get("extra_outputs") or []
    if g is None or not outs:
        return None
    x = np.asarray(calib_x[:ADAPT_WINDOWS], np.float32)
    taps = TAP_SOURCES[source](q, x, arena)[1:]
    g2 = adapt(g, guard_features(g, bundle.model, x), tflite_tap_features(taps, outs))
    return {**g2.to_json(), **guard_meta(g2), "outputs": [{**o, "tap": t} for o, t in zip(outs, g2.taps)],
            "adapted_to": source,
            "features": "tap outputs dequantized (int8) or as they are (float); the score in float on the host "
                        "or device"}


def tflite_guard_size(bundle, graph: dict) -> tuple[int, int]:
    """(values, flash bytes of the score's constants) of the device guard of an int8 .tflite with tap outputs,
    known before the guard is refitted (tflite_guard); (0, 0) without a guard."""
    from .guard import from_meta

    g = from_meta(bundle.meta)
    outs = graph.get("extra_outputs") or []
    if g is None or not outs:
        return 0, 0
    dim = sum(int(np.prod(o["shape"][1:])) for o in outs)
    return dim, guard_const_bytes(dim, g.means.shape[0])


# ---------------------------------------------------------------------------------------------- C (devices)
def _floats(name: str, values, per_line: int = 8) -> str:
    vals = [repr(float(np.float32(v))) + "f" for v in np.asarray(values, np.float64).reshape(-1)] or ["0.0f"]
    rows = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return f"static const float {name}[{len(vals)}] = {{\n  " + ",\n  ".join(rows) + "\n};\n"


FLOAT_BYTES = 4  # the device's constants are float32


def guard_const_bytes(dim: int, classes: int) -> int:
    """Flash of drsn_guard.c's constants for a guard of `dim` values and `classes` class means: each value's
    scale and zero point, W upper triangular (packed) and the whitened means, all float32 (0 without a guard)."""
    d, k = int(dim), int(classes)
    return FLOAT_BYTES * (2 * d + d * (d + 1) // 2 + k * d) if d > 0 else 0


def _c_constants(guard: dict) -> dict[str, np.ndarray]:
    """The arrays drsn_guard.c holds: per-value scale and zero point of the int8 taps, packed W, whitened means."""
    from .guard import Guard

    g = Guard.from_json(guard)
    w, m = g.whitening()
    per_value = [int(np.prod(o["shape"][1:])) for o in guard["outputs"]]
    return {"scale": np.repeat([float(o["scale"]) for o in guard["outputs"]], per_value),
            "zero": np.repeat([float(o["zero_point"]) for o in guard["outputs"]], per_value),
            "w": w[np.triu_indices(w.shape[0])], "means": m}


def guard_c_sources(guard: dict | None) -> dict[str, str]:
    """drsn_guard.h / drsn_guard.c for the firmware: the score of the sidecar's guard (tflite_guard) in float on
    the dequantized int8 taps, min_k |W f − m_k|² with W upper triangular (stored packed, row by row).
    Without a guard DRSN_GUARD_DIM is 0 and drsn_guard_score returns −1."""
    h = ("/* generated by drsn-edge: the domain guard's score on the device */\n#ifndef DRSN_GUARD_H\n"
         "#define DRSN_GUARD_H\n#include <stdint.h>\n")
    if not guard:
        h += "#define DRSN_GUARD_DIM 0\n#define DRSN_GUARD_THRESHOLD 0.0f\n"
        c = '#include "drsn_guard.h"\n\nfloat drsn_guard_score(const int8_t *taps) {\n  (void)taps;\n  return -1.0f;\n}\n'
    else:
        consts = _c_constants(guard)
        d, k = len(consts["scale"]), consts["means"].shape[0]
        h += (f"#define DRSN_GUARD_DIM {d}\n#define DRSN_GUARD_CLASSES {k}\n"
              f"#define DRSN_GUARD_THRESHOLD {float(np.float32(guard['threshold']))!r}f\n")
        if guard.get("level"):
            lo, hi = (float(np.float32(guard["level"][end])) for end in ("lo", "hi"))
            h += ("/* The raw window's level (its standard deviation in the training data's units, before the z-score)\n"
                  " * is in domain within [LO, HI]: check it where the samples are read (a disconnected sensor's noise\n"
                  " * normalizes to what a healthy machine looks like). */\n"
                  f"#define DRSN_GUARD_LEVEL_LO {lo!r}f\n#define DRSN_GUARD_LEVEL_HI {hi!r}f\n")
        c = ('#include "drsn_guard.h"\n\n' + "".join(_floats(n, v) for n, v in consts.items())
             + f"""
float drsn_guard_score(const int8_t *taps) {{
  float f[DRSN_GUARD_DIM], z[DRSN_GUARD_DIM], best = -1.0f;
  const float *wp = w;
  for (int j = 0; j < DRSN_GUARD_DIM; j++) f[j] = ((float)taps[j] - zero[j]) * scale[j];
  for (int i = 0; i < DRSN_GUARD_DIM; i++) {{
    float acc = 0.0f;
    for (int j = i; j < DRSN_GUARD_DIM; j++) acc += *wp++ * f[j];
    z[i] = acc;
  }}
  for (int k = 0; k < DRSN_GUARD_CLASSES; k++) {{
    float s = 0.0f;
    for (int i = 0; i < DRSN_GUARD_DIM; i++) {{
      float e = z[i] - means[k * DRSN_GUARD_DIM + i];
      s += e * e;
    }}
    if (best < 0.0f || s < best) best = s;
  }}
  return best;
}}
""")
    h += ("/* Squared Mahalanobis distance of the window's int8 taps, concatenated (the C engine's drsn_guard_taps, or\n"
          " * TFLite Micro's outputs 1..n), to the nearest class mean; in domain when <= DRSN_GUARD_THRESHOLD.\n"
          " * −1 when the model has no guard. */\nfloat drsn_guard_score(const int8_t *taps);\n#endif\n")
    return {"drsn_guard.h": h, "drsn_guard.c": c}


def guard_score_ref(guard: dict, taps: np.ndarray) -> np.ndarray:
    """What drsn_guard_score computes, in float64 on the host, for int8 taps [N, D]."""
    from .guard import Guard

    return Guard.from_json(guard).score(tflite_tap_features(_split(taps, guard["outputs"]), guard["outputs"]))


def _split(taps: np.ndarray, outputs: list[dict]) -> list[np.ndarray]:
    sizes = np.cumsum([int(np.prod(o["shape"][1:])) for o in outputs])[:-1]
    return np.split(np.asarray(taps).reshape(len(taps), -1), sizes, axis=1)
