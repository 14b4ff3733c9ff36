import json

import numpy as np
import onnx
import pytest
import torch

from drsn_edge.bundle import load_bundle
from drsn_edge.export import ExportValidationError, compare_outputs, export, run_ort, ort_session, to_onnx_bytes
from drsn_edge.models import create_model
from drsn_edge.models.deploy import DeployNet

from .conftest import randomize_bn, run_cli




@pytest.mark.parametrize("arch", ["drsn-cw", "drsn-cs", "resnet", "convnet"])
def test_deploy_form_equals_trained_model(arch):
    m = randomize_bn(create_model(arch, classes=10, depth=2))
    d = DeployNet(m, 3, 2048)
    x = torch.randn(3, 1, 2048)
    with torch.no_grad():
        assert (m(x) - d(x)).abs().max() < 1e-5
    names = [n for n, _ in d.named_modules()]
    assert not any(isinstance(mod, torch.nn.BatchNorm1d) for mod in d.modules()), "BatchNorm must be folded"
    assert any(n.endswith("conv1_bn2") for n in names)


def test_onnx_graph_is_deploy_form():
    m = randomize_bn(create_model("drsn-cw", classes=10, depth=1))
    g = onnx.load_from_string(to_onnx_bytes(m, 2, 2048))
    ops = {n.op_type for n in g.graph.node}
    assert "BatchNormalization" not in ops and "Sign" not in ops and "Abs" not in ops
    assert {"Max", "Neg", "Relu", "Sub", "Sigmoid", "ReduceMean", "Conv", "Gemm"} <= ops
    assert [d.dim_value for d in g.graph.input[0].type.tensor_type.shape.dim] == [2, 1, 2048]
    assert g.graph.input[0].name == "vibration" and g.graph.output[0].name == "logits"
    assert g.opset_import[0].version >= 17
    assert any(n.name.startswith("/units/units.0/shrink") for n in g.graph.node)


def test_export_cli_validates_and_writes_sidecar(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "m.onnx"
    r = run_cli("export", tiny_model, "-o", out, "--batch", "2", "--data", tiny_data, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["validation"]["max_abs_diff"] < 1e-4 and res["validation"]["top1_agreement"] == 1.0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["input"]["shape"] == [2, 1, 2048] and side["precision"] == "fp32"
    assert len(side["source_model_sha256"]) == 64 and side["tools"]["onnxruntime"]
    g = onnx.load(out)
    props = {p.key: p.value for p in g.metadata_props}
    assert json.loads(props["drsn_edge.class_names"]) == load_bundle(tiny_model).class_names
    # ONNX Runtime reproduces PyTorch on real windows
    from drsn_edge.data.dataset import load_dataset, normalize

    x = normalize(load_dataset(tiny_data).x[:6])
    ref = load_bundle(tiny_model).model(torch.from_numpy(x)).detach().numpy()
    got = run_ort(ort_session(out.read_bytes()), x, 2)
    assert compare_outputs(ref, got)["max_abs_diff"] < 1e-4


def test_export_fails_over_tolerance(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportValidationError, match="differs from PyTorch"):
        export(tiny_model, out, data=str(tiny_data), atol=0.0)
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("args,needle", [(["-o", "m.txt"], "end in .onnx"), (["-o", "m.onnx", "--batch", "0"], "batch"),
                                         (["-o", "m.onnx", "--opset", "11"], "opset")])
def test_export_bad_options(tiny_model, tmp_path, args, needle):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "drsn_edge", "export", str(tiny_model), *args], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 2 and needle in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_compare_outputs_numbers():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    got = np.array([[1.0, 0.5], [1.0, 0.0]])
    c = compare_outputs(ref, got)
    assert c["max_abs_diff"] == pytest.approx(2.0)
    assert c["top1_agreement"] == 0.5
    assert c["sqnr_db"] == pytest.approx(10 * np.log10(5 / 4 / ((0.25 + 1 + 4) / 4)))
