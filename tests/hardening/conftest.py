"""Shared inputs of the hardening tests, made once per session; each test copies what it needs into its
own working folder, so that 'no file changed' can be checked on that folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


def write_raw_dataset(path: Path, ds, x=None, keep=None) -> Path:
    """Write a dataset file directly (as an older or foreign writer could), bypassing save_dataset's checks."""
    idx = np.arange(len(ds)) if keep is None else np.asarray(keep, dtype=np.int64)
    man = ds.manifest()
    np.savez_compressed(path, x=(ds.x if x is None else x)[idx], y=ds.y[idx], noise=ds.noise[idx],
                        snr_db=ds.snr_db[idx], recording=ds.recording[idx], split=ds.split[idx],
                        manifest_json=np.array(json.dumps(man, default=str)))
    return path


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Path:
    from drsn_edge.bundle import default_model_path, load_bundle, make_meta, save_bundle
    from drsn_edge.calibration import default_calibration_path
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize

    root = tmp_path_factory.mktemp("assets")
    ds = synthesize(windows_per_class=12, recordings_per_class=4, seed=3, split=(0.5, 0.25, 0.25))
    save_dataset(ds, root / "d.npz")
    write_raw_dataset(root / "empty.npz", ds, keep=[])
    write_raw_dataset(root / "huge.npz", ds, x=np.where(ds.x >= 0, 3e38, -3e38).astype(np.float32))
    # a model of classes the simulator does not know, with its (renamed) training data
    names = [f"pump{i}" for i in range(len(ds.class_names))]
    ds.class_names = names
    save_dataset(ds, root / "real.npz")
    b = load_bundle(default_model_path())
    meta = make_meta(b.model, names, b.fs, b.window, b.normalization,
                     training={"data": str(root / "real.npz"), "data_sha256": _sha(root / "real.npz")})
    save_bundle(b.model, meta, root / "real.drsn")
    gone = dict(meta, training={"data": str(root / "gone.npz"), "data_sha256": "0" * 64})  # training data not at hand
    save_bundle(b.model, gone, root / "gone.drsn")
    shutil.copy(default_model_path(), root / "m.drsn")
    shutil.copy(default_calibration_path(), root / "cal.npz")
    shutil.copy(default_calibration_path().with_suffix(".json"), root / "cal.json")
    return root


def _sha(p):
    from drsn_edge.fileio import sha256_file

    return sha256_file(p)


@pytest.fixture(scope="session")
def build_asset(assets) -> str:
    """A QDQ ONNX build folder 'b' among the assets (ONNX Runtime on this machine; made once, when asked for)."""
    from drsn_edge.build import build

    if not (assets / "b").is_dir():
        tdir = assets / "targets"
        tdir.mkdir(exist_ok=True)
        (tdir / "bench-onnxruntime.toml").write_text('name = "bench-onnxruntime"\nfamily = "host"\n'
                                                      'backend = "onnxruntime"\n')
        from drsn_edge.evalspec import EvalSpec

        build("bench-onnxruntime", assets / "m.drsn", [str(tdir)], out_dir=assets / "b", method="minmax",
              calib=str(assets / "cal.npz"), spec=EvalSpec(windows_per_class=2), max_drop=100.0, max_cell_drop=100.0)
    return "b"


@pytest.fixture
def work(tmp_path, assets):
    """A fresh working folder and a `put(*names)` that copies session assets (and their manifests) into it."""
    cwd = tmp_path / "w"
    cwd.mkdir()

    def put(*names):
        for n in names:
            if (assets / n).is_dir():
                shutil.copytree(assets / n, cwd / n)
                continue
            shutil.copy(assets / n, cwd / n)
            side = (assets / n).with_suffix(".json")
            if n.endswith(".npz") and side.exists():
                shutil.copy(side, cwd / side.name)
        return cwd

    put.cwd = cwd
    return put
