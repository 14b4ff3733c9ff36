"""`profile`: per-op rows from the runtime's own profiler, mapped onto the model's layers."""

import json

import numpy as np
import pytest

from .conftest import run_cli


def _deploy(tiny_model):
    from drsn_edge.evaluate import resolve_model
    from drsn_edge.models.deploy import DeployNet

    bundle, _ = resolve_model(str(tiny_model))
    return bundle, DeployNet(bundle.model, 1, bundle.window)


def _layer_macs(net, window) -> dict[str, int]:
    """MACs of every Conv2d and Linear of the deploy net, from forward hooks (independent of the graph)."""
    import torch

    macs, hooks = {}, []
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: macs.__setitem__(
                n, o.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: macs.__setitem__(
                n, mod.in_features * mod.out_features)))
    with torch.no_grad():
        net(torch.zeros(1, 1, window))
    for h in hooks:
        h.remove()
    return macs


def _places(net) -> set[str]:
    return {n for n, _ in net.named_modules() if n} | {"stem", "head"}


@pytest.fixture(scope="module")
def fp32_onnx(tiny_model, tmp_path_factory):
    from drsn_edge.export import to_onnx_bytes

    bundle, net = _deploy(tiny_model)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(to_onnx_bytes(bundle.model, 1, bundle.window))
    return path, net, bundle.window


def test_onnxruntime_rows_cover_every_node_with_the_layers_macs(fp32_onnx):
    from drsn_edge.backends.onnxrt import OrtRunner

    path, net, window = fp32_onnx
    res = OrtRunner(path).profile_ops(np.zeros((1, 1, window), np.float32), repeats=20, warmup=3)
    rows = res["rows"]
    assert rows and all(r["module"] in _places(net) for r in rows)  # every node named after a layer or block
    expected = _layer_macs(net, window)
    got = {r["module"]: r["macs"] for r in rows if r["macs"]}
    assert got == expected  # each convolution (fused or re-laid-out) charged once with its exact MACs
    # the profiled run also holds the executor's work between kernels, so the nodes' kernel times sum to
    # less than it — but they are most of it; each row then leaves out the profiler's own per-node cost
    # (the cheapest node's time), which the cheapest node shows as 0
    assert 0.3 * res["total_us"] < res["kernel_sum_us"] <= res["total_us"]
    assert sum(r["time_us"] for r in rows) == pytest.approx(res["kernel_sum_us"] - len(rows) * res["invoke_floor_us"])
    assert min(r["time_us"] for r in rows) == 0.0


@pytest.mark.slow
def test_litert_ops_timed_alone_keep_every_op_and_its_layer(tiny_model, fp32_onnx):
    pytest.importorskip("litert_torch", reason="the tflite extra (litert-torch) is not installed")
    from drsn_edge.backends.litert import profile_isolated
    from drsn_edge.backends.tflite import (
        float_tflite,
        graph_ops,
        op_modules,
        strip_names,
    )

    bundle, net = _deploy(tiny_model)
    named = float_tflite(bundle.model, bundle.window)
    mods = op_modules(named)
    res = profile_isolated(strip_names(named), repeats=10, warmup=2, modules=mods)
    assert [r["op_type"] for r in res["rows"]] == graph_ops(named)
    assert all(m in _places(net) for m in mods)
    assert sum(r["macs"] for r in res["rows"]) == sum(_layer_macs(net, bundle.window).values())
    assert min(r["time_us"] for r in res["rows"]) == 0.0  # the cheapest op stands for the invoke cost


@pytest.fixture(scope="module")
def onnx_build(tiny_model, tiny_calib, tmp_path_factory):
    root = tmp_path_factory.mktemp("ob")
    (root / "t").mkdir()
    (root / "t" / "cpu-onnx.toml").write_text('name = "cpu-onnx"\nfamily = "host"\nbackend = "onnxruntime"\n')
    out = root / "build"
    r = run_cli("build", tiny_model, "--target", "cpu-onnx", "--targets-dir", root / "t", "--precision", "fp32",
                "--calib", tiny_calib, "--windows-per-class", "2", "--noise", "none", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    return out


def test_profile_command_json_and_report(onnx_build, tmp_path):
    r = run_cli("profile", onnx_build, "--repeats", "20", "--warmup", "3", "--json", "--report", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["target"] == "cpu-onnx" and res["runtime"] == "onnxruntime (fp32)"
    assert [b["block"] for b in res["blocks"]] == ["stem", "units.0", "units.1", "units.2", "head", "guard"]
    assert sum(r["share"] for r in res["rows"]) == pytest.approx(1.0)  # shares of the op rows' sum
    assert sum(b["time_us"] for b in res["blocks"]) == pytest.approx(res["rows_total_us"])
    shrink = sum(r["time_us"] for r in res["rows"] if ".shrink" in r["module"])
    assert res["shrinkage_share"] == pytest.approx(shrink / res["rows_total_us"])
    assert sorted(res["sweep"]) == ["1", "32", "8"] and res["wall_p50_us"] > 0
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["profile.json", "profile.md", "profile.png"]


def test_profile_refuses_another_target_and_a_missing_folder(onnx_build, tmp_path):
    r = run_cli("profile", onnx_build, "--target", "host")
    assert r.returncode == 2 and "was built for cpu-onnx, not host" in r.stderr
    r = run_cli("profile", tmp_path / "none")
    assert r.returncode == 2 and "does not exist" in r.stderr
