"""benchmarks/real_data_pipeline.py on a small set of simulated recordings written as .mat/.csv/.wav files (one
recording per class, split by time): every step runs through the CLI with no other code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_quantizer", reason="the host target needs the tflite extra")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_data_pipeline.py"


@pytest.mark.slow
def test_folder_of_recordings_to_check(tmp_path):
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--make-demo", str(tmp_path / "rec"), "--seconds", "6",
                        "--depth", "1", "--epochs", "2", "--batch", "16", "--calib-n", "32", "--max-drop", "100",
                        "--max-cell-drop", "100", "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(p.suffix for p in (tmp_path / "rec").iterdir() if p.is_file()) == [".csv", ".json", ".mat", ".wav"]
    fig = json.loads(out.read_text())
    assert fig["import"]["classes"] == ["healthy", "inner-race", "outer-race"]
    # 6 s at 12 kHz = 72000 samples per recording; cuts at 50400 and 61200: 24 + 5 + 5 windows of 2048 per class
    assert {k: v["per_class"] for k, v in fig["import"]["counts"].items()} == {
        "train": [24, 24, 24], "val": [5, 5, 5], "test": [5, 5, 5]}
    recorded = f"test split of {tmp_path / 'rec' / 'work' / 'data.npz'} recorded in the model (3 recording(s))"
    assert fig["evaluate"]["data"] == recorded
    assert fig["quantize"]["evaluation"].startswith(recorded)
    assert [row["method"] for row in fig["quantize"]["table"]] == ["minmax", "percentile", "entropy", "mse"]
    for target in ("jetson-orin-nano", "host"):
        assert fig[f"build {target}"]["measured_on"].startswith(recorded)
        assert fig[f"check {target}"]["data"].startswith(recorded)
        assert fig[f"check {target}"]["out_of_domain"] is not None
