"""Importing models trained elsewhere: deploy-form ONNX, state dicts and TorchScript → .drsn bundle."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from drsn_edge.bundle import load_bundle, make_meta
from drsn_edge.errors import InputError
from drsn_edge.export import annotate, to_onnx_bytes
from drsn_edge.model_import import detect_format, import_model
from drsn_edge.models import create_model

ARCHS = ["drsn-cw", "drsn-cs", "resnet", "convnet"]
NAMES = [f"fault{i}" for i in range(10)]
WINDOW, FS = 128, 12000.0
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")]
DEFAULTS = {"depth": 4, "width": 1, "classes": 10, "stages": 3, "kernel": 3, "in_channels": 1}




def _model(arch="drsn-cw", seed=0, **kw):
    """A registry model with random BatchNorm statistics and affines (so folding is exercised)."""
    torch.manual_seed(seed)
    cfg = {"classes": 10, "depth": 1, **kw}
    m = create_model(arch, **cfg)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                sign = torch.where(torch.rand_like(mod.weight) < 0.2, -1.0, 1.0)
                mod.weight.copy_(sign * torch.empty_like(mod.weight).uniform_(0.5, 1.5))
                mod.bias.normal_(0, 0.3)
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _same_outputs(a, b, length=WINDOW):
    x = torch.randn(4, 1, length, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (a(x) - b(x)).abs().max().item()
    assert diff < 1e-5, diff


def _cfg(config, key):
    return config.get(key, DEFAULTS[key])


def _same_config(model, summary, bundle):
    assert summary["arch"] == bundle.arch == model.arch
    for key in ("depth", "width", "classes"):
        assert _cfg(summary["config"], key) == _cfg(model.config, key) == _cfg(bundle.meta["config"], key)


def _onnx_file(tmp_path, model, meta=True, opset=17, name="model.onnx"):
    om = onnx.load_from_string(to_onnx_bytes(model, 1, WINDOW, opset))
    if meta:
        annotate(om, make_meta(model, NAMES, FS, WINDOW))
    path = tmp_path / name
    path.write_bytes(om.SerializeToString())
    return path


def _assert_no_output(out):
    folder = out.parent
    assert not out.exists()
    if folder.exists():
        assert [p.name for p in folder.iterdir()] == []


# -------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cfg", [{"depth": 1}, {"depth": 2, "width": 2}], ids=["d1", "d2w2"])
def test_onnx_round_trip(tmp_path, arch, cfg):
    model = _model(arch, **cfg)
    src = _onnx_file(tmp_path, model)
    out = tmp_path / "out" / "imported.drsn"
    res = import_model(src, out)
    bundle = load_bundle(out)
    _same_outputs(model, bundle.model)
    _same_config(model, res, bundle)
    assert res["source_format"] == "onnx" and res["out"] == str(out)
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert res["verification"]["max_abs_diff"] < 1e-5
    assert bundle.class_names == NAMES and bundle.fs == FS and bundle.window == WINDOW
    imp = bundle.meta["imported_from"]
    assert imp["format"] == "onnx" and imp["path"] == str(src.resolve())
    assert imp["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_onnx_shared_initializers(tmp_path):
    """A freshly built model has equal BN tensors: the exporter dedups them behind Identity nodes."""
    torch.manual_seed(0)
    model = create_model("drsn-cs", classes=10, depth=2).eval()
    src = _onnx_file(tmp_path, model)
    assert any(n.op_type == "Identity" for n in onnx.load(src).graph.node)
    out = tmp_path / "m.drsn"
    import_model(src, out)
    _same_outputs(model, load_bundle(out).model)


def test_quantized_onnx_is_refused(tmp_path):
    from drsn_edge.quantize.ptq import quantize_onnx

    calib = np.random.default_rng(0).standard_normal((8, 1, WINDOW)).astype(np.float32)
    src = tmp_path / "model.int8.onnx"
    src.write_bytes(quantize_onnx(to_onnx_bytes(_model("drsn-cw"), 1, WINDOW), calib, 1))
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match=r"unsupported ONNX node .*\(QuantizeLinear\).*quantized"):
        import_model(src, out, classes=10, fs=FS)
    _assert_no_output(out)


def test_onnx_without_metadata_uses_options_and_graph_window(tmp_path):
    model = _model("drsn-cs", depth=2)
    src = _onnx_file(tmp_path, model, meta=False, opset=18)  # opset 18: ReduceMean axes as an input
    out = tmp_path / "m.drsn"
    res = import_model(src, out, classes=10, fs=48000)
    bundle = load_bundle(out)
    _same_outputs(model, bundle.model)
    assert bundle.window == WINDOW  # from the static input shape
    assert bundle.class_names == [f"class{i}" for i in range(10)] and bundle.fs == 48000.0
    # inferred (not stored) config still describes the same network
    assert res["config"] == {"classes": 10, "width": 1, "depth": 2}


def test_options_override_meta_json_and_embedded(tmp_path):
    model = _model("resnet")
    src = _onnx_file(tmp_path, model)
    mj = tmp_path / "meta.json"
    mj.write_text(json.dumps({"class_names": [f"j{i}" for i in range(10)], "fs": 1000, "arch": "resnet"}))
    out = tmp_path / "m.drsn"
    import_model(src, out, meta_json=mj, fs=2000)
    b = load_bundle(out)
    assert b.class_names == [f"j{i}" for i in range(10)] and b.fs == 2000.0 and b.window == WINDOW


def test_onnx_arch_option_must_match_graph(tmp_path):
    src = _onnx_file(tmp_path, _model("drsn-cw"))
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="drsn-cw.*arch=resnet"):
        import_model(src, out, arch="resnet")
    _assert_no_output(out)


def _insert_after_stem(om, op="Tanh", name="/extra/Tanh"):
    g = om.graph
    stem = next(n for n in g.node if n.name == "/stem/Conv")
    old = stem.output[0]
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = "extra_out"
    idx = list(g.node).index(stem)
    g.node.insert(idx + 1, helper.make_node(op, [old], ["extra_out"], name=name))


def test_onnx_extra_node_in_path_is_named(tmp_path):
    om = onnx.load_from_string(to_onnx_bytes(_model("drsn-cw"), 1, WINDOW))
    _insert_after_stem(om)
    src = tmp_path / "bad.onnx"
    src.write_bytes(om.SerializeToString())
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match=r"unsupported ONNX node '/extra/Tanh' \(Tanh\)"):
        import_model(src, out, classes=10, fs=FS)
    _assert_no_output(out)


def test_onnx_dangling_node_and_unused_initializer_are_named(tmp_path):
    om = onnx.load_from_string(to_onnx_bytes(_model("resnet"), 1, WINDOW))
    om.graph.node.append(helper.make_node("Sin", ["logits"], ["side"], name="/extra/Sin"))
    src = tmp_path / "dangling.onnx"
    src.write_bytes(om.SerializeToString())
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="'/extra/Sin' \\(Sin\\)"):
        import_model(src, out, classes=10, fs=FS)

    om = onnx.load_from_string(to_onnx_bytes(_model("resnet"), 1, WINDOW))
    om.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(3, np.float32), "spare.weight"))
    src = tmp_path / "spare.onnx"
    src.write_bytes(om.SerializeToString())
    with pytest.raises(InputError, match="initializer 'spare.weight'"):
        import_model(src, out, classes=10, fs=FS)
    _assert_no_output(out)


def test_training_form_onnx_is_refused_with_advice(tmp_path):
    from drsn_edge.models.blocks import deploy_ops

    model = _model("drsn-cw")
    f = io.BytesIO()
    with deploy_ops():
        torch.onnx.export(model, (torch.zeros(1, 1, WINDOW),), f, dynamo=False, opset_version=17)
    src = tmp_path / "train_form.onnx"
    src.write_bytes(f.getvalue())
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="unsupported ONNX node .*training-form.*state dict"):
        import_model(src, out, classes=10, fs=FS)
    _assert_no_output(out)


def test_missing_metadata_names_the_options(tmp_path):
    src = _onnx_file(tmp_path, _model("convnet"), meta=False)
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match=r"does not record fs, class_names; pass fs .*class_names"):
        import_model(src, out)
    sd = tmp_path / "w.pt"
    torch.save(_model("drsn-cw").state_dict(), sd)
    with pytest.raises(InputError, match=r"does not record fs, window, class_names"):
        import_model(sd, out)
    with pytest.raises(InputError, match=r"does not record window; pass window"):
        import_model(sd, out, classes=10, fs=FS)
    with pytest.raises(InputError, match="10 outputs but 3 class names"):
        import_model(sd, out, class_names=["a", "b", "c"], fs=FS, window=WINDOW)
    _assert_no_output(out)


# -------------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize("wrap", ["raw", "ddp", "state_dict", "ddp+model"])
@pytest.mark.parametrize("arch", ["drsn-cw", "drsn-cs"])
def test_state_dict_round_trip(tmp_path, arch, wrap):
    model = _model(arch, depth=2, width=2)
    sd = model.state_dict()
    if "ddp" in wrap:
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"state_dict": sd, "epoch": 3} if wrap == "state_dict" else {"model": sd} if "model" in wrap else sd
    src = tmp_path / "weights.pth"
    torch.save(obj, src)
    out = tmp_path / "m.drsn"
    res = import_model(src, out, class_names=NAMES, fs=FS, window=WINDOW)
    bundle = load_bundle(out)
    _same_outputs(model, bundle.model)
    _same_config(model, res, bundle)
    assert res["source_format"] == "state_dict" and bundle.meta["imported_from"]["format"] == "state_dict"


def test_state_dict_without_thresholds_needs_arch(tmp_path):
    model = _model("convnet")
    src = tmp_path / "w.pt"
    torch.save(model.state_dict(), src)
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="arch='resnet' or arch='convnet'"):
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    _assert_no_output(out)
    mj = tmp_path / "meta.json"
    mj.write_text(json.dumps({"arch": "convnet", "classes": 10, "fs": FS, "window": WINDOW}))
    res = import_model(src, out, meta_json=mj)
    assert res["arch"] == "convnet"
    _same_outputs(model, load_bundle(out).model)


def test_state_dict_unknown_key_is_named(tmp_path):
    sd = _model("drsn-cw").state_dict()
    sd["units.0.extra.weight"] = torch.zeros(3)
    src = tmp_path / "w.pt"
    torch.save(sd, src)
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="'units.0.extra.weight'"):
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    sd = _model("drsn-cw").state_dict()
    del sd["units.1.conv2.weight"]
    torch.save(sd, src)
    with pytest.raises(InputError, match="lacks weight 'units.1.conv2.weight'"):
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    _assert_no_output(out)


# -------------------------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("arch,how", [("resnet", "script"), ("convnet", "script"), ("drsn-cw", "trace"),
                                      ("drsn-cs", "trace")])
def test_torchscript_round_trip(tmp_path, arch, how):
    model = _model(arch, depth=2, width=2)
    sm = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(1, 1, WINDOW))
    src = tmp_path / "model.torchscript"
    torch.jit.save(sm, str(src))
    assert detect_format(src) == "torchscript"
    out = tmp_path / "m.drsn"
    res = import_model(src, out, class_names=NAMES, fs=FS, window=WINDOW)  # arch: scripted attrs / thresholds
    bundle = load_bundle(out)
    _same_outputs(model, bundle.model)
    _same_config(model, res, bundle)
    assert res["source_format"] == "torchscript"


def test_traced_plain_net_needs_arch(tmp_path):
    model = _model("resnet")
    src = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 1, WINDOW)), str(src))
    out = tmp_path / "m.drsn"
    with pytest.raises(InputError, match="pass arch="):
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    import_model(src, out, classes=10, fs=FS, window=WINDOW, arch="resnet")
    _same_outputs(model, load_bundle(out).model)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip(path, files: dict):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_malicious_torchscript_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    _zip(src, {"evil/data.pkl": pickle.dumps({"x": _Evil(marker)}, protocol=2),
               "evil/code/__torch__/evil.py": "def forward(self): pass\n", "evil/version": "3\n"})
    assert detect_format(src) == "torchscript"
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match=r"refers to (posix|os|nt)\.system"):
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    assert not marker.exists()
    _assert_no_output(out)


@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_malicious_pickle_is_refused_by_weights_only(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"stem.weight": _Evil(marker)}, protocol=2)
    src = tmp_path / "evil.pt"
    if container == "legacy":
        src.write_bytes(payload)
    else:
        _zip(src, {"evil/data.pkl": payload, "evil/version": "3\n", "evil/byteorder": "little"})
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="weights_only"):
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    assert not marker.exists()
    _assert_no_output(out)


# -------------------------------------------------------------------------------- bad files / options


@pytest.mark.parametrize("name,data", [
    ("garbage.onnx", bytes(range(256)) * 4),
    ("truncated.pt", b"PK\x03\x04" + b"\x00" * 40),
    ("empty.onnx", b""),
    ("garbage.pt", b"not a pickle at all"),
])
def test_corrupt_files(tmp_path, name, data):
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError) as e:
        import_model(src, out, classes=10, fs=FS, window=WINDOW)
    assert name in str(e.value) and "\n" not in str(e.value)
    _assert_no_output(out)


def test_truncated_real_onnx(tmp_path):
    src = _onnx_file(tmp_path, _model("drsn-cw"))
    src.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError):
        import_model(src, out)
    _assert_no_output(out)


def test_output_suffix_and_missing_source(tmp_path):
    src = _onnx_file(tmp_path, _model("drsn-cw"))
    with pytest.raises(InputError, match=r"end in \.drsn"):
        import_model(src, tmp_path / "out" / "m.onnx")
    _assert_no_output(tmp_path / "out" / "m.onnx")
    with pytest.raises(InputError, match="does not exist"):
        import_model(tmp_path / "nope.onnx", tmp_path / "out" / "m.drsn")
    mj = tmp_path / "meta.json"
    mj.write_text(json.dumps({"sample_rate": 1}))
    with pytest.raises(InputError, match="unknown key 'sample_rate'"):
        import_model(src, tmp_path / "out" / "m.drsn", meta_json=mj)
    _assert_no_output(tmp_path / "out" / "m.drsn")


def test_torchscript_with_truncated_storage_is_refused(tmp_path):
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(_model("resnet")), str(good))
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as zin:
        files = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    root = next(n for n in files if n.endswith("/data.pkl")).split("/")[0]
    files[f"{root}/data/0"] = b"\x00\x00"
    _zip(bad, files)
    out = tmp_path / "out" / "m.drsn"
    with pytest.raises(InputError, match="truncated storage record"):
        import_model(bad, out, classes=10, fs=FS, window=WINDOW)
    _assert_no_output(out)
