"""The float32 host engine (C generated from a float ONNX graph, compiled with -march=native).

Hand-made graphs use small integer weights and inputs, and means over power-of-two lengths: every sum,
product and mean is then exact in float32 whatever the order of the additions, so the engine must give the
numpy result bit for bit. The real model is compared with ONNX Runtime on the same graph."""

import shutil

import numpy as np
import pytest

from drsn_edge.errors import InputError

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the engine is compiled by gcc")


def _model(nodes, inputs, outputs, inits):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _engine(model_bytes, tmp_path):
    from drsn_edge.cengine.f32codegen import generate_f32
    from drsn_edge.cengine.f32host import F32Engine

    meta = generate_f32(model_bytes, tmp_path / "eng")
    return F32Engine(tmp_path / "eng"), meta


def _conv_ref(x, w, b, s, p):
    """x [Ci, L], w [Co, Ci, K]: y[o, t] = b[o] + Σ w[o, c, q] x[c, t·s + q − p] (zeros outside)."""
    ci, length = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (p, p)))
    n = (length + 2 * p - k) // s + 1
    return np.stack([b[o] + sum(w[o, c, q] * xp[c, q: q + s * n: s] for c in range(ci) for q in range(k))
                     for o in range(w.shape[0])])


@pytest.mark.parametrize("ci,co,length,stride", [(3, 5, 40, 1), (2, 4, 64, 2), (1, 8, 70, 2)])
def test_convolution_with_relu_is_exact(tmp_path, ci, co, length, stride):
    from onnx import helper

    rng = np.random.default_rng(ci * 100 + co)
    w = rng.integers(-3, 4, (co, ci, 1, 3)).astype(np.float32)
    b = rng.integers(-5, 6, co).astype(np.float32)
    out_len = (length + 2 - 3) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="/conv/Conv", kernel_shape=[1, 3],
                              pads=[0, 1, 0, 1], strides=[1, stride]),
             helper.make_node("Relu", ["c"], ["y"], name="/Relu")]
    eng, meta = _engine(_model(nodes, [("x", [1, ci, 1, length])], [("y", [1, co, 1, out_len])], {"w": w, "b": b}),
                        tmp_path)
    x = rng.integers(-4, 5, (ci, length)).astype(np.float32)
    want = np.maximum(_conv_ref(x, w[:, :, 0], b, stride, 1), 0).reshape(-1)
    assert np.array_equal(eng.run(x.reshape(1, -1))[0], want)
    assert [k["op_type"] for k in meta["kernels"]] == ["Copy", "Conv+Relu"]  # the ReLU runs in the conv
    assert meta["macs"] == co * ci * 3 * out_len


def test_soft_threshold_and_residual_sum_are_one_loop_and_exact(tmp_path):
    """y = relu(x − τ) − relu(−x − τ) + x with τ = ½·mean|x| per channel, |x| = max(x, −x) (the deploy form)."""
    from onnx import helper

    n = helper.make_node
    nodes = [n("Neg", ["x"], ["nx"], name="/u/Neg"), n("Max", ["x", "nx"], ["a"], name="/u/shrink/Max"),
             n("ReduceMean", ["a"], ["m"], name="/u/shrink/ReduceMean", axes=[3], keepdims=1),
             n("Mul", ["m", "half"], ["tau"], name="/u/shrink/Mul"),
             n("Sub", ["x", "tau"], ["d1"], name="/u/shrink/Sub"), n("Relu", ["d1"], ["r1"], name="/u/shrink/Relu_1"),
             n("Sub", ["nx", "tau"], ["d2"], name="/u/shrink/Sub_1"), n("Relu", ["d2"], ["r2"], name="/u/shrink/Relu_2"),
             n("Sub", ["r1", "r2"], ["s"], name="/u/shrink/Sub_2"), n("Add", ["s", "x"], ["y"], name="/u/Add")]
    eng, meta = _engine(_model(nodes, [("x", [1, 2, 1, 32])], [("y", [1, 2, 1, 32])], {"half": [0.5]}), tmp_path)
    x = np.random.default_rng(1).integers(-9, 10, (2, 32)).astype(np.float32)
    tau = 0.5 * np.abs(x).mean(axis=1, keepdims=True)
    want = np.sign(x) * np.maximum(np.abs(x) - tau, 0) + x
    assert np.array_equal(eng.run(x.reshape(1, -1))[0], want.reshape(-1))
    # |x| is computed inside the mean's loop; the threshold, the soft threshold and the sum in one pass
    assert [k["op_type"] for k in meta["kernels"]] == ["Copy", "Neg+Max+ReduceMean", "Mul",
                                                       "Neg+Sub+Relu+Sub+Relu+Sub+Add"]


def test_shortcut_subsample_zero_channels_mean_and_gemm_are_exact(tmp_path):
    from onnx import helper

    n = helper.make_node
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    nodes = [n("AveragePool", ["x"], ["p"], name="/u/pool/AveragePool", kernel_shape=[1, 1], strides=[1, 2]),
             n("Concat", ["p", "zeros"], ["c"], name="/u/Concat", axis=1),
             n("ReduceMean", ["c"], ["m"], name="/ReduceMean", axes=[2, 3], keepdims=0),
             n("Gemm", ["m", "w", "b"], ["y"], name="/fc/Gemm", transB=1)]
    model = _model(nodes, [("x", [1, 2, 1, 144])], [("y", [1, 3])],
                   {"zeros": np.zeros((1, 2, 1, 72)), "w": w, "b": [1, 2, 3]})
    eng, meta = _engine(model, tmp_path)
    x = 9 * np.arange(288, dtype=np.float32).reshape(2, 144)  # 72 kept values: vectors and a scalar tail
    feat = np.concatenate([x[:, ::2].mean(axis=1), [0, 0]])  # a sum of multiples of 9 over 72: exact
    assert np.array_equal(eng.run(x.reshape(1, -1))[0], w @ feat + [1, 2, 3])
    assert [k["kind"] for k in meta["kernels"]] == ["input", "subsample", "concat", "mean", "fc"]


def test_an_op_the_engine_lacks_is_refused_by_name(tmp_path):
    from onnx import helper

    nodes = [helper.make_node("Tanh", ["x"], ["y"], name="/act/Tanh")]
    with pytest.raises(InputError, match=r"cannot run Tanh node '/act/Tanh'"):
        _engine(_model(nodes, [("x", [1, 2, 1, 8])], [("y", [1, 2, 1, 8])], {}), tmp_path)
    conv = [helper.make_node("Conv", ["x", "w"], ["y"], name="/c/Conv", kernel_shape=[1, 3], pads=[0, 1, 0, 1],
                             dilations=[1, 2])]
    with pytest.raises(InputError, match=r"Conv node '/c/Conv'"):
        _engine(_model(conv, [("x", [1, 2, 1, 8])], [("y", [1, 2, 1, 6])], {"w": np.ones((2, 2, 1, 3))}), tmp_path)
    flat = [helper.make_node("Flatten", ["x"], ["f"], name="/Flatten"),
            helper.make_node("Gemm", ["f", "w"], ["y"], name="/fc/Gemm", transB=1)]
    with pytest.raises(InputError, match=r"Flatten node '/Flatten': it turns \[1, 2, 1, 8\] into \[1, 16\]"):
        _engine(_model(flat, [("x", [1, 2, 1, 8])], [("y", [1, 3])], {"w": np.ones((3, 16))}), tmp_path)


@pytest.fixture(scope="module")
def tiny_engine(tiny_model, tmp_path_factory):
    from drsn_edge.cengine.f32codegen import generate_f32
    from drsn_edge.evaluate import resolve_model
    from drsn_edge.export import to_onnx_bytes

    bundle, _ = resolve_model(str(tiny_model))
    onnx_bytes = to_onnx_bytes(bundle.model, 1, bundle.window)
    folder = tmp_path_factory.mktemp("f32") / "native"
    return bundle, onnx_bytes, folder, generate_f32(onnx_bytes, folder)


def test_the_model_matches_onnx_runtime_on_the_same_graph(tiny_engine):
    """Same graph, same float32 weights; only the order of the additions differs (vectors along time, FMA), so
    logits agree to a few float32 ulps of their magnitude: 1e-5 relative is ~100 ulps and far below any
    change of class."""
    import onnxruntime as ort

    from drsn_edge.cengine.f32host import F32Engine

    bundle, onnx_bytes, folder, meta = tiny_engine
    x = np.random.default_rng(0).standard_normal((16, 1, bundle.window)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i: i + 1]})[0] for i in range(len(x))])
    got = F32Engine(folder).run(x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert (got.argmax(1) == want.argmax(1)).all()
    units = len(bundle.model.units)
    # one loop per soft threshold with the residual sum, which also writes the next unit's affine + ReLU;
    # the last one takes the head's affine, ReLU and mean instead
    kinds = [k["op_type"] for k in meta["kernels"]]
    assert kinds.count("Neg+Sub+Relu+Sub+Relu+Sub+Add+Conv+Relu") == units - 1
    assert kinds.count("Neg+Sub+Relu+Sub+Relu+Sub+Add+Conv+Relu+ReduceMean") == 1
    assert sum(k["op_type"] == "Neg+Max+ReduceMean" for k in meta["kernels"]) == units


def test_profile_rows_cover_every_kernel_with_the_models_macs(tiny_engine):
    from drsn_edge.backends.native import NativeRunner
    from drsn_edge.cengine.f32host import install_lib
    from drsn_edge.models import count_macs

    bundle, _, folder, meta = tiny_engine
    lib = install_lib(folder)
    runner = NativeRunner(folder / lib["library"], lib["cpu_signature"])
    res = runner.profile_ops(np.zeros((1, 1, bundle.window), np.float32), repeats=5, warmup=1)
    assert [r["op_type"] for r in res["rows"]] == [k["op_type"] for k in meta["kernels"]]
    assert sum(r["macs"] for r in res["rows"]) == count_macs(bundle.model, bundle.window)
    assert {r["module"].split(".")[0] for r in res["rows"]} <= {"stem", "units", "head_bn_affine", "fc", ""}
    assert all(r["time_us"] >= 0 for r in res["rows"]) and res["total_us"] > 0
    assert runner.engine.lib_path == folder / lib["library"]  # the build folder's own library, not a rebuild
    # a library built for another processor is not loaded: the same sources are compiled for this one
    other = NativeRunner(folder / lib["library"], "another processor")
    assert other.engine.lib_path != folder / lib["library"]
    x = np.random.default_rng(3).standard_normal((2, 1, bundle.window)).astype(np.float32)
    assert np.array_equal(other.infer(x), runner.infer(x))


@pytest.mark.parametrize("arch", ["drsn-cs", "resnet", "convnet"])
def test_every_architecture_runs_and_matches_onnx_runtime(arch, tmp_path):
    """The registry's other skeletons (channel-shared threshold: a mean over channels; no shrinkage; no
    shortcut), random weights and batch-norm statistics; tolerance as for the trained model."""
    import onnxruntime as ort
    import torch

    from drsn_edge.export import to_onnx_bytes
    from drsn_edge.models import create_model

    from .conftest import randomize_bn

    torch.manual_seed(0)
    model = randomize_bn(create_model(arch, width=1, depth=2, kernel=5))
    onnx_bytes = to_onnx_bytes(model, 1, 256)
    eng, _ = _engine(onnx_bytes, tmp_path)
    x = np.random.default_rng(0).standard_normal((4, 1, 256)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i: i + 1]})[0] for i in range(len(x))])
    got = eng.run(x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def _tapped_graph():
    """y = W·mean_t(x) + b (the logits) with three more outputs: mean |x| per channel (computed nowhere else: a
    loop of its own), the mean the head reads ([2, 1]) and relu(x) [2, 32] (otherwise computed inside the mean's
    loop and never stored). Small integers, means over 32: exact in float32."""
    from onnx import helper

    n = helper.make_node
    nodes = [n("Relu", ["x"], ["r"], name="/Relu"),
             n("ReduceMean", ["r"], ["m"], name="/ReduceMean", axes=[3], keepdims=1),
             n("Flatten", ["m"], ["mf"], name="/Flatten"),
             n("Gemm", ["mf", "w", "b"], ["y"], name="/fc/Gemm", transB=1),
             n("Neg", ["x"], ["nx"], name="/guard/Neg"), n("Max", ["x", "nx"], ["a"], name="/guard/Max"),
             n("ReduceMean", ["a"], ["guard.absmean"], name="/guard/ReduceMean", axes=[2, 3], keepdims=0),
             n("Identity", ["mf"], ["guard.head"], name="/guard/Identity"),
             n("Identity", ["r"], ["guard.relu"], name="/guard/Identity_1")]
    w = np.array([[1, -2], [3, 4], [-1, 0]], np.float32)
    return _model(nodes, [("x", [1, 2, 1, 32])],
                  [("y", [1, 3]), ("guard.absmean", [1, 2]), ("guard.head", [1, 2]), ("guard.relu", [1, 2, 1, 32])],
                  {"w": w, "b": [1, 2, 3]}), w


def test_extra_outputs_follow_the_logits_exactly_and_each_is_stored(tmp_path):
    model, w = _tapped_graph()
    eng, meta = _engine(model, tmp_path)
    x = np.random.default_rng(7).integers(-9, 10, (2, 32)).astype(np.float32)
    r = np.maximum(x, 0)
    logits, taps = eng.run(x.reshape(1, -1), taps=True)
    assert np.array_equal(logits[0], w @ r.mean(axis=1) + [1, 2, 3])
    assert np.array_equal(taps[0], np.concatenate([np.abs(x).mean(axis=1), r.mean(axis=1), r.reshape(-1)]))
    assert (eng.output_size, eng.taps_size) == (3, 2 + 2 + 64)
    assert meta["taps"] == [{"name": "guard.absmean", "size": 2}, {"name": "guard.head", "size": 2},
                            {"name": "guard.relu", "size": 64}]
    # relu(x) is an output, so it is stored (not recomputed in the mean's loop); the loop that only makes
    # mean |x| runs right after the input it reads, not after the head
    assert [k["op_type"] for k in meta["kernels"]] == ["Copy", "Neg+Max+ReduceMean", "Relu", "ReduceMean", "Gemm"]
    src = (tmp_path / "eng" / "drsn_f32_model.c").read_text()
    assert "const int drsn_f32_taps_size = 68;" in src and "     64 guard.relu" in src
    eng.run_one(np.zeros(64, np.float32))
    assert not eng.taps().any()  # the taps of the last window run


def test_an_engine_without_extra_outputs_declares_no_taps(tiny_engine):
    from drsn_edge.cengine.f32host import F32Engine

    _, _, folder, meta = tiny_engine
    assert "drsn_f32_taps_size" not in (folder / "drsn_f32_model.c").read_text()
    assert (meta["taps"], meta["taps_size"]) == ([], 0)
    eng = F32Engine(folder)
    assert eng.taps_size == 0 and eng.taps().shape == (0,)


def test_the_generated_c_is_the_same_whatever_the_hash_seed(tiny_engine, tmp_path):
    """Buffers are assigned in graph order, not in the order of a set of names (which changes with Python's
    string hash seed from one process to the next): the same model gives the same source, so the compiled
    library's cache (keyed by the source's hash) is hit."""
    import os
    import subprocess
    import sys

    _, onnx_bytes, _, _ = tiny_engine
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    code = ("import sys; from pathlib import Path; from drsn_edge.cengine.f32codegen import generate_f32; "
            "generate_f32(Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]))")
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx"), str(tmp_path / seed)], check=True,
                       env=dict(os.environ, PYTHONHASHSEED=seed), timeout=300)
    assert (tmp_path / "1" / "drsn_f32_model.c").read_bytes() == (tmp_path / "2" / "drsn_f32_model.c").read_bytes()


@pytest.mark.parametrize("arch", ["drsn-cw", "drsn-cs", "resnet", "convnet"])
def test_every_architectures_guard_taps_match_onnx_runtime(arch, tmp_path):
    """Every tap the architecture offers (guard.available_taps) exported as outputs after the logits (what a
    guarded bundle's engine is generated from): each output equals ONNX Runtime's on the same graph within the
    logits' tolerance (1e-5 of the largest magnitude: ~100 float32 ulps, another order of additions)."""
    import onnxruntime as ort
    import torch

    from drsn_edge.export import deploy_to_onnx_bytes
    from drsn_edge.guard import available_taps
    from drsn_edge.models import create_model
    from drsn_edge.models.deploy import DeployNet

    from .conftest import randomize_bn

    torch.manual_seed(1)
    model = randomize_bn(create_model(arch, width=1, depth=2, kernel=5))
    taps = available_taps(model)
    onnx_bytes = deploy_to_onnx_bytes(DeployNet(model, 1, 256, taps=taps), 1, 256)
    eng, meta = _engine(onnx_bytes, tmp_path)
    assert [t["name"] for t in meta["taps"]] == [f"guard.{t}" for t in taps]
    x = np.random.default_rng(0).standard_normal((3, 1, 256)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    want = [np.concatenate([o.reshape(1, -1) for o in sess.run(None, {sess.get_inputs()[0].name: x[i: i + 1]})],
                           axis=1)[0] for i in range(len(x))]
    logits, got_taps = eng.run(x, taps=True)
    got = np.concatenate([logits, got_taps], axis=1)
    assert got.shape == (3, eng.output_size + sum(t["size"] for t in meta["taps"]))
    assert np.abs(got - np.stack(want)).max() <= 1e-5 * max(1.0, np.abs(np.stack(want)).max())
