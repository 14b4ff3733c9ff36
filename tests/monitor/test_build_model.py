"""The monitor runs exactly what `build` produced: the int8 artifact through the build's runner."""

import json

import numpy as np
import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def onnx_build(tiny_model, tiny_calib, tiny_data, tmp_path_factory):
    """A QDQ int8 ONNX build (the Jetson profile; ONNX Runtime runs it here) of the tiny model."""
    out = tmp_path_factory.mktemp("orin") / "orin"
    r = run_cli("build", tiny_model, "--target", "jetson-orin-nano", "--calib", tiny_calib, "--data", tiny_data,
                "-o", out, "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_monitor_runs_the_build_with_its_runner_and_batch_variants(onnx_build, tiny_data, tmp_path):
    from drsn_edge.backends import load_build
    from drsn_edge.data.dataset import load_dataset, normalize
    from drsn_edge.monitor.model import load_model

    build = load_build(onnx_build)
    m = load_model(str(onnx_build))
    assert m.name.startswith("onnxruntime") and m.source == str(build.artifact)
    assert (m.class_names, m.fs, m.window) == (build.class_names, build.fs, build.window)
    ds = load_dataset(tiny_data).select_split("test")
    x = normalize(ds.x[:40])
    ref = build.runner()
    ref.activate()
    single = ref.infer(x)  # batch 1, window by window
    batched = m.infer(x)   # 32 on the batch-32 variant, 8 on batch 1
    # the variants are quantized with the same calibration and method: equal scales, equal results
    # up to float summation order inside ONNX Runtime's kernels
    np.testing.assert_allclose(batched, single, atol=1e-4)
    m.close()
    ref.deactivate()
    sig = ds.x[:12, 0, :].reshape(-1)
    np.save(tmp_path / "s.npy", sig)
    r = run_cli("monitor", onnx_build, "--source", tmp_path / "s.npy", "--out", tmp_path / "o.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["runner"] == m.name and summary["counters"]["windows"] == 12
    wins = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    got = [w["class"] for w in wins if w["type"] == "window"]
    assert got == [build.class_names[i] for i in single[:12].argmax(1)]
