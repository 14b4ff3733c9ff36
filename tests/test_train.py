import json

import numpy as np
import pytest
import torch

from drsn_edge.bundle import load_bundle
from drsn_edge.errors import InputError
from drsn_edge.train import TrainConfig, _lr_at, augment, train
from drsn_edge.data.noise import measured_snr_db

from .conftest import run_cli


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), epochs=3, batch=32, width=1, depth=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_follows_paper_fractions():
    cfg = TrainConfig(data="d", out="m.drsn", epochs=100)
    assert [_lr_at(e, cfg) for e in (0, 39, 40, 79, 80, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_augment_exact_snr_and_clean_share():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 1, 256)).astype(np.float32)
    noisy, kind, snr = augment(x, rng, ["gaussian", "laplacian", "pink"], -5, 5, 0.25)
    clean = kind == "none"
    assert 0.15 < clean.mean() < 0.35
    assert np.array_equal(noisy[clean], x[clean])
    assert set(kind[~clean]) == {"gaussian", "laplacian", "pink"}
    got = measured_snr_db(x[~clean, 0], noisy[~clean, 0])
    np.testing.assert_allclose(got, snr[~clean], atol=1e-3)
    assert snr[~clean].min() >= -5 and snr[~clean].max() <= 5


def test_train_writes_bundle_with_metadata(tiny_data, tmp_path):
    out = tmp_path / "m.drsn"
    s = train(_cfg(tiny_data, out, epochs=2))
    assert out.exists() and not out.with_suffix(".resume.pt").exists()
    b = load_bundle(out)
    assert b.arch == "drsn-cw" and len(b.class_names) == 10
    assert b.meta["training"]["recipe"]["epochs"] == 2
    assert len(b.meta["training"]["history"]) == 2
    assert len(b.meta["training"]["data_sha256"]) == 64
    assert 0 <= s["best_val_acc"] <= 1 and s["windows_per_s"] > 0


def test_resume_continues_to_the_same_result(tiny_data, tmp_path):
    full = tmp_path / "full.drsn"
    train(_cfg(tiny_data, full))
    part = tmp_path / "part.drsn"

    class Stop(Exception):
        pass

    def stop_after_first(event, **info):
        if event == "epoch" and info["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(_cfg(tiny_data, part), progress=stop_after_first)
    assert part.with_suffix(".resume.pt").exists() and not part.exists()
    train(_cfg(tiny_data, part, resume=True))
    a, b = load_bundle(full), load_bundle(part)
    assert [h["epoch"] for h in b.meta["training"]["history"]] == [1, 2, 3]
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6)


def test_resume_without_checkpoint_is_refused(tiny_data, tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        train(_cfg(tiny_data, tmp_path / "x.drsn", resume=True))


@pytest.mark.parametrize("kw,msg", [({"epochs": 0}, "epochs"), ({"batch": 1}, "batch"),
                                    ({"out": "model.pt"}, ".drsn"), ({"snr_min": 3, "snr_max": -3}, "empty")])
def test_bad_options(tiny_data, tmp_path, kw, msg):
    kw.setdefault("out", str(tmp_path / "m.drsn"))
    with pytest.raises(InputError, match=msg):
        train(_cfg(tiny_data, **kw))


@pytest.mark.slow
def test_ddp_two_processes_with_torchrun(tiny_data, tmp_path):
    out = tmp_path / "ddp.drsn"
    r = run_cli("train", "--data", tiny_data, "-o", out, "--epochs", "2", "--batch", "32", "--width", "1",
                "--depth", "1", "--nproc", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    objs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(objs) == 1, r.stdout  # only rank 0 reports
    assert objs[0]["world_size"] == 2
    b = load_bundle(out)
    assert b.meta["training"]["world_size"] == 2
    assert len(b.meta["training"]["history"]) == 2
