"""Root cause 6: sizes are estimated from the inputs and refused with the figure before anything is
allocated (limits.py): memory of windows and sweeps, model headers, ONNX dims, small files read capped."""

import json
import os

import pytest

from .contract import expect

BUDGET = {"DRSN_EDGE_MAX_MEMORY_MB": "2000"}  # the same refusal on any machine


@pytest.mark.parametrize("args,needle", [
    (["calibration", "make", "--data", "d.npz", "-o", "c.npz", "--n", "1000000"], "would need"),
    (["data", "synth", "-o", "x.npz", "--windows-per-class", "100000"], "would need"),
    (["data", "synth", "-o", "x.npz", "--windows-per-class", "1000", "--noise", "all", "--snr", "-5:5:0.1",
      "--noise-mode", "sweep"], "would need"),
    (["evaluate", "m.drsn", "--windows-per-class", "100000"], "would need"),
    (["quantize", "m.drsn", "--calib", "cal.npz", "-o", "q.onnx", "--windows-per-class", "100000"], "would need"),
    (["data", "synth", "-o", "x.npz", "--noise", "gaussian", "--snr", "-5:5:1e-7"], "limit"),
    (["evaluate", "m.drsn", "--snr", "-5:5:1e-7"], "limit"),
    (["export", "m.drsn", "-o", "a.onnx", "--batch", "1000000000"], "--batch"),
    (["data", "import", "d.npz", "-o", "x.npz", "--fs", "1e-300"], "--fs"),
])
def test_oversized_request_is_refused_with_the_figure(work, args, needle):
    expect(args, work("d.npz", "m.drsn", "cal.npz"), "input", contains=needle, env_extra=BUDGET, timeout=120)


def _rewrite_header(src, dst, **config):
    """A bundle whose header (metadata) claims another config, with the original weights."""
    raw = open(src, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["drsn_edge"])
    meta["config"].update(config)
    header["__metadata__"]["drsn_edge"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(len(new).to_bytes(8, "little") + new + raw[8 + n:])


@pytest.mark.parametrize("config,needle", [({"depth": 100000}, "depth"), ({"width": 1e6}, "width"),
                                           ({"base_channels": 64}, "weights"),
                                           ({"base_channels": 4096, "width": 16}, "parameters"),
                                           ({"kernel": 10**9}, "kernel")])
@pytest.mark.parametrize("cmd", [["evaluate", "big.drsn"], ["export", "big.drsn", "-o", "b.onnx"],
                                 ["build", "big.drsn", "--target", "host", "-o", "b"]])
def test_model_header_with_absurd_sizes_is_refused_before_building_it(work, config, needle, cmd):
    cwd = work("m.drsn")
    _rewrite_header(cwd / "m.drsn", cwd / "big.drsn", **config)
    expect(cmd, cwd, "input", contains=needle, timeout=120)


def _onnx_with_dim(path, dim):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 1, 2048])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dim, 1, 2048])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("cmd", [["lint", "big.onnx"], ["import", "big.onnx", "-o", "x.drsn"]])
def test_onnx_dims_beyond_the_limit_are_refused(work, cmd):
    cwd = work.cwd
    _onnx_with_dim(cwd / "big.onnx", 2**31)
    expect(cmd, cwd, "input", contains="dimension", timeout=120)


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_target_toml_that_is_a_device_is_refused(work, target):
    cwd = work.cwd
    (cwd / "t").mkdir()
    os.symlink(target, cwd / "t" / "zz.toml")
    expect(["targets", "zz", "--targets-dir", "t"], cwd, "input", contains="regular file", timeout=60)


def test_oversized_target_toml_is_refused(work):
    cwd = work.cwd
    (cwd / "t").mkdir()
    (cwd / "t" / "zz.toml").write_text("# " + "x" * (2 << 20) + "\n")
    expect(["targets", "zz", "--targets-dir", "t"], cwd, "input", contains="larger than", timeout=60)


def test_import_meta_json_that_is_a_device_is_refused(work):
    cwd = work("m.drsn")
    os.symlink("/dev/zero", cwd / "meta.json")
    expect(["import", "m.drsn", "-o", "x.drsn", "--meta", "meta.json"], cwd, "input", timeout=60)


@pytest.mark.parametrize("args,needle", [
    (["build", "m.drsn", "--engine", "c", "--target", "qemu-m7", "--windows-per-class", "100000"], "would need"),
    (["build", "m.drsn", "--target", "host", "--snr", "-5:5:0.02", "--windows-per-class", "2000"], "noise sweep"),
    (["check", "--build", "--target", "qemu-m7", "--windows-per-class", "100000"], "would need"),
    (["benchmark", "m.drsn", "--windows-per-class", "100000"], "would need"),
    (["monitor", "m.drsn", "--source", "rec.npy", "--fs", "1", "--resample"], "resampling"),
])
def test_evaluation_and_stream_sizes_are_refused_before_the_work(work, args, needle):
    """build measures after converting: its evaluation windows are counted before (EvalSpec.preflight), and
    no build folder is started; monitor's resampler would turn each chunk into chunk × 12000 samples."""
    import numpy as np

    cwd = work("m.drsn")
    np.save(cwd / "rec.npy", np.zeros(300_000, np.float32))
    expect(args, cwd, "input", contains=needle, env_extra=BUDGET, timeout=300)


@pytest.mark.parametrize("repeats,needle", [("1000000", "would need"), ("5000", "records at most")])
def test_profiler_trace_is_bounded_before_the_work(work, build_asset, repeats, needle):
    """ONNX Runtime's per-op trace is read back whole (about 5 kB per node and run) and keeps at most
    1,000,000 events (about 1,590 runs of the shipped model's QDQ graph): both are refused up front."""
    expect(["profile", build_asset, "--repeats", repeats], work(build_asset), "input", contains=needle,
           env_extra={"DRSN_EDGE_MAX_MEMORY_MB": "100000"} if needle != "would need" else BUDGET, timeout=300)
