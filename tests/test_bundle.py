"""The .drsn bundle: round trip, metadata validation, refusal of pickles / truncated / mismatched files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from drsn_edge import __version__
from drsn_edge.bundle import FORMAT, FORMAT_VERSION, Bundle, load_bundle, make_meta, read_meta, save_bundle
from drsn_edge.errors import InputError
from drsn_edge.models import create_model

NAMES = ["normal", "IR007", "B007", "OR007"]
ARCHS = ["drsn-cw", "drsn-cs", "resnet", "convnet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(arch="drsn-cw", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(classes=len(NAMES), width=1, depth=1)
    cfg.update(kw)
    m = create_model(arch, **cfg)
    m.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(2):
            m(torch.randn(8, 1, 256) * 2 + 0.3)
    return m.eval()


def _meta(model=None, **over):
    meta = make_meta(model or _model(), NAMES, 12_000, 2048)
    meta.update(over)
    return meta


def _write(path, meta, model=None):
    """Write a safetensors file with arbitrary (possibly invalid) metadata, bypassing save_bundle's checks."""
    state = {k: v.detach().contiguous() for k, v in (model or _model()).state_dict().items()}
    save_file(state, str(path), metadata={"drsn_edge": json.dumps(meta)})
    return path


class _Evil:
    """Unpickling this calls open(marker, 'w'), i.e. creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    m = _model(arch, depth=2)
    meta = make_meta(m, NAMES, 12_000, 2048, trained_on="unit-test")
    path = save_bundle(m, meta, tmp_path / "m.drsn")
    assert path == tmp_path / "m.drsn"
    assert [p.name for p in tmp_path.iterdir()] == ["m.drsn"]  # no temp files left
    b = load_bundle(path)
    assert isinstance(b, Bundle)
    assert not b.model.training
    x = torch.randn(4, 1, 512)
    with torch.no_grad():
        assert torch.equal(b.model(x), m(x))
    for k, v in m.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v), k
    assert b.meta == meta == read_meta(path)
    assert (b.arch, b.class_names, b.fs, b.window, b.normalization) == (arch, NAMES, 12_000.0, 2048, "zscore")
    assert b.meta["trained_on"] == "unit-test"
    assert b.meta["format"] == FORMAT and b.meta["format_version"] == FORMAT_VERSION
    assert b.meta["drsn_edge_version"] == __version__
    assert b.meta["config"] == {"classes": 4, "width": 1, "depth": 2}


def test_config_without_classes_uses_class_names(tmp_path):
    m = create_model("resnet", width=1, depth=1, classes=4).eval()
    meta = _meta(m)
    meta["config"] = {"width": 1, "depth": 1}
    _write(tmp_path / "m.drsn", meta, m)
    b = load_bundle(tmp_path / "m.drsn")
    assert b.model.fc.out_features == 4


# ---------------------------------------------------------------- metadata validation


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(format="onnx"), "not a drsn-edge model bundle"),
        (dict(format_version=FORMAT_VERSION + 1), "upgrade drsn-edge"),
        (dict(format_version=0), "invalid bundle format_version"),
        (dict(format_version="1"), "invalid bundle format_version"),
        (dict(arch="transformer"), "unknown architecture 'transformer'"),
        (dict(class_names=["a", "b", "c"]), "4 classes but 3 class names"),
        (dict(class_names=["a", "b", "c", "a"]), "distinct"),
        (dict(class_names=["only"], config={"width": 1, "depth": 1}), "at least two"),
        (dict(class_names="abcd"), "class names"),
        (dict(config=[1, 2]), "config must be an object"),
        (dict(fs=0), "sample rate"),
        (dict(fs=-12000.0), "sample rate"),
        (dict(fs="12000"), "sample rate"),
        (dict(fs=float("nan")), "sample rate"),
        (dict(fs=float("inf")), "sample rate"),
        (dict(window=32), "invalid window"),
        (dict(window=2048.0), "invalid window"),
        (dict(window="2048"), "invalid window"),
        (dict(normalization="minmax"), "normalization"),
    ],
)
def test_read_meta_validates(tmp_path, over, match):
    path = _write(tmp_path / "m.drsn", _meta(**over))
    with pytest.raises(InputError, match=match):
        read_meta(path)
    with pytest.raises(InputError, match=match):
        load_bundle(path)


def test_newer_format_message_says_upgrade(tmp_path):
    path = _write(tmp_path / "m.drsn", _meta(format_version=FORMAT_VERSION + 1))
    with pytest.raises(InputError) as ei:
        read_meta(path)
    msg = str(ei.value)
    assert f"format {FORMAT_VERSION + 1}" in msg and "upgrade" in msg and "\n" not in msg


@pytest.mark.parametrize("key", ["arch", "config", "class_names", "fs", "window", "normalization"])
def test_missing_required_key(tmp_path, key):
    meta = _meta()
    del meta[key]
    with pytest.raises(InputError, match=f"lacks {key}"):
        read_meta(_write(tmp_path / "m.drsn", meta))


def test_make_meta_and_save_bundle_validate(tmp_path):
    m = _model()
    with pytest.raises(InputError, match="4 classes but 3"):
        make_meta(m, NAMES[:3], 12_000, 2048)
    with pytest.raises(InputError, match="sample rate"):
        make_meta(m, NAMES, 0, 2048)
    with pytest.raises(InputError, match="upgrade"):
        save_bundle(m, _meta(format_version=99), tmp_path / "m.drsn")
    assert list(tmp_path.iterdir()) == []


def test_plain_safetensors_without_metadata_is_refused(tmp_path):
    save_file({"w": torch.zeros(3)}, str(tmp_path / "plain.drsn"))
    with pytest.raises(InputError, match="not a drsn-edge model bundle"):
        read_meta(tmp_path / "plain.drsn")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.drsn"), metadata={"drsn_edge": "{not json"})
    with pytest.raises(InputError, match="not a drsn-edge model bundle"):
        load_bundle(tmp_path / "other.drsn")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_bundle(tmp_path / "nope.drsn")
    (tmp_path / "dir.drsn").mkdir()
    with pytest.raises(InputError, match="is a folder; name a regular file"):
        read_meta(tmp_path / "dir.drsn")


@pytest.mark.parametrize("raw", ["[1, 2]", "null", "CLASS_LISTS"])
def test_non_object_metadata_is_input_error(tmp_path, raw):
    if raw == "CLASS_LISTS":
        raw = json.dumps(_meta(class_names=[["a"], ["b"], ["c"], ["d"]]))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "m.drsn"), metadata={"drsn_edge": raw})
    with pytest.raises(InputError):
        read_meta(tmp_path / "m.drsn")


# ---------------------------------------------------------------- hostile and broken files


def test_malicious_pickle_named_drsn_is_refused_without_executing(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe))).close()
    assert probe.exists()  # the payload really executes when unpickled

    marker = tmp_path / "PWNED"
    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"model{proto}.drsn"
        path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}, protocol=proto))
        with pytest.raises(InputError, match="not a drsn-edge model bundle"):
            load_bundle(path)
        with pytest.raises(InputError):
            read_meta(path)
    assert not marker.exists()


def test_torch_save_checkpoint_named_drsn_is_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.drsn"
    torch.save({"payload": _Evil(marker), "w": torch.zeros(2)}, path)
    with pytest.raises(InputError, match="not a drsn-edge model bundle"):
        load_bundle(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 5, 8, 40, "half_header", "half", "minus1"])
def test_truncated_bundle_is_refused(tmp_path, keep):
    full = save_bundle(_model(), _meta(), tmp_path / "full.drsn").read_bytes()
    header_len = int.from_bytes(full[:8], "little")
    n = {"half_header": 8 + header_len // 2, "half": len(full) // 2, "minus1": len(full) - 1}.get(keep, keep)
    assert n < len(full)
    path = tmp_path / "cut.drsn"
    path.write_bytes(full[:n])
    with pytest.raises(InputError):
        load_bundle(path)


def test_truncated_weights_keep_valid_metadata_readable(tmp_path):
    """Cutting the weights leaves the header: read_meta works, load_bundle refuses the weights."""
    full = save_bundle(_model(), _meta(), tmp_path / "full.drsn").read_bytes()
    path = tmp_path / "cut.drsn"
    path.write_bytes(full[: len(full) - 100])
    assert read_meta(path)["arch"] == "drsn-cw"
    with pytest.raises(InputError, match="unreadable weights"):
        load_bundle(path)


@pytest.mark.parametrize(
    "weights_arch, weights_cfg",
    [("resnet", {}), ("drsn-cs", {}), ("drsn-cw", {"width": 2}), ("drsn-cw", {"depth": 2}), ("drsn-cw", {"classes": 3})],
)
def test_weights_for_another_architecture_are_refused(tmp_path, weights_arch, weights_cfg):
    other = _model(weights_arch, **weights_cfg)
    _write(tmp_path / "m.drsn", _meta(_model("drsn-cw")), other)
    with pytest.raises(InputError, match="do not match architecture drsn-cw"):
        load_bundle(tmp_path / "m.drsn")


@pytest.mark.parametrize(
    "weights_arch, weights_cfg, needle",
    [("resnet", {}, "threshold"), ("drsn-cw", {"width": 2}, "shape of")],
)
def test_weight_mismatch_message_names_the_mismatch(tmp_path, weights_arch, weights_cfg, needle):
    _write(tmp_path / "m.drsn", _meta(_model("drsn-cw")), _model(weights_arch, **weights_cfg))
    with pytest.raises(InputError, match=needle):
        load_bundle(tmp_path / "m.drsn")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    m = _model()
    with torch.no_grad():
        m.units[0].conv2.weight[0, 0, 1] = value
    save_bundle(m, _meta(m), tmp_path / "m.drsn")
    with pytest.raises(InputError, match=r"non-finite values in weight 'units\.0\.conv2\.weight'"):
        load_bundle(tmp_path / "m.drsn")


def test_nan_in_batchnorm_statistics_is_refused(tmp_path):
    m = _model("resnet")
    m.bn.running_var[0] = float("nan")
    save_bundle(m, _meta(m), tmp_path / "m.drsn")
    with pytest.raises(InputError, match="bn.running_var"):
        load_bundle(tmp_path / "m.drsn")


def test_bad_config_in_metadata_is_input_error(tmp_path):
    meta = _meta()
    meta["config"] = {"classes": 4, "width": 1, "depth": 1, "dropout": 0.1}
    with pytest.raises(InputError, match="unknown model option"):
        load_bundle(_write(tmp_path / "a.drsn", meta))
    meta["config"] = {"classes": 4, "width": 1, "depth": 0}
    with pytest.raises(InputError, match="bad model config"):
        load_bundle(_write(tmp_path / "b.drsn", meta))
