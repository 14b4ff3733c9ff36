"""Root cause 12: lint judges only valid ONNX (the ONNX checker first; an empty or foreign file is bad
input, exit 2); a missing local file named by an option is bad input (exit 2), never a device failure."""

import pytest

from .contract import expect


def _qdq(path, drop_initializer=False):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    if drop_initializer:
        inits = inits[1:]
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"\x00" * 100), "onnx"),
    (lambda p: p.write_text("not onnx at all"), "onnx"),
    (lambda p: _qdq(p, drop_initializer=True), "checker"),
])
def test_lint_refuses_what_is_not_a_valid_onnx_model(work, make, needle):
    cwd = work.cwd
    make(cwd / "x.onnx")
    expect(["lint", "x.onnx"], cwd, "input", contains=needle, timeout=120)


def test_lint_passes_a_valid_qdq_model(work):
    cwd = work.cwd
    _qdq(cwd / "ok.onnx")
    run = expect(["lint", "ok.onnx"], cwd, "ok", timeout=120)
    assert run.obj["passed"] is True


@pytest.mark.parametrize("args", [
    ["build", "--target", "jetson-orin-nano", "--device", "ssh://u@192.0.2.1", "--ssh-config", "nope.cfg"],
    ["build", "--target", "jetson-orin-nano", "--device", "ssh://u@192.0.2.1", "--ssh-identity", "nope.key"],
    ["check", "--target", "jetson-orin-nano", "--device", "ssh://u@192.0.2.1", "--ssh-config", "nope.cfg"],
])
def test_missing_local_file_is_bad_input_not_a_device_failure(work, args):
    expect(args, work("m.drsn"), "input", contains="nope", timeout=120)
