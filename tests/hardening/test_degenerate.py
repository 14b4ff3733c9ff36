"""Root cause 5: empty and degenerate data get one line (exit 2) from every command that reads it: a
0-window dataset is refused where datasets are read (and save_dataset no longer writes one); samples so
large that float32 normalization overflows are refused; non-finite model outputs are never reported."""

import numpy as np
import pytest

from .contract import expect

READERS = [
    ["data", "info", "{f}"],
    ["evaluate", "m.drsn", "--data", "{f}", "--split", "all"],
    ["export", "m.drsn", "-o", "e.onnx", "--data", "{f}"],
    ["quantize", "m.drsn", "--calib", "cal.npz", "-o", "q.onnx", "--data", "{f}"],
    ["calibration", "make", "--data", "{f}", "-o", "c.npz"],
    ["calibration", "info", "{f}"],
    ["train", "--data", "{f}", "-o", "t.drsn", "--epochs", "1"],
    ["build", "m.drsn", "--calib", "cal.npz", "--target", "host", "--data", "{f}", "-o", "b"],
    ["build", "m.drsn", "--calib", "{f}", "--target", "host", "-o", "b"],
]


@pytest.mark.parametrize("f,needle", [("empty.npz", "no windows"), ("huge.npz", "beyond")])
@pytest.mark.parametrize("args", READERS, ids=[" ".join(a[:2]) + (" calib" if "--calib" in a and "{f}" == a[a.index("--calib") + 1] else "") for a in READERS])
def test_degenerate_dataset_is_one_line(work, args, f, needle):
    cwd = work(f, "m.drsn", "cal.npz")
    expect([a.format(f=f) for a in args], cwd, "input", contains=needle)


def test_check_with_empty_data_is_one_line(work):
    """check reads --data before it looks for the build or opens a device."""
    cwd = work("empty.npz", "m.drsn")
    expect(["check", "--target", "host", "--data", "empty.npz"], cwd, "input", contains="no windows")


def test_save_dataset_refuses_to_write_an_empty_dataset(tmp_path, assets):
    from drsn_edge.data.dataset import load_dataset, save_dataset
    from drsn_edge.errors import InputError

    ds = load_dataset(assets / "d.npz")
    with pytest.raises(InputError, match="no windows"):
        save_dataset(ds.subset(np.zeros(0, dtype=np.int64)), tmp_path / "e.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["benchmark", "m.drsn", "--format", "pytorch fp32", "--data", "empty.npz", "--work", "w"],
    ["guard", "fit", "m.drsn", "--data", "empty.npz", "-o", "g.drsn"],
    ["data", "merge", "empty.npz", "d.npz", "-o", "x.npz"],
    ["check", "--build", "--target", "qemu-m7", "--data", "empty.npz"],
])
def test_empty_data_of_later_commands_is_one_line_and_leaves_nothing(work, args):
    """No work folder, build folder or output is started for data that cannot be used."""
    expect(args, work("empty.npz", "d.npz", "m.drsn"), "input", contains="no windows")
