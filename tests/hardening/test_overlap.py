"""Root cause 4: an output that is, holds or sits inside an input is refused (outputs.guard_file /
guard_folder, used by every command that writes); a folder that is not a previous build is not replaced
without --force."""

import numpy as np
import pytest

from .contract import expect


@pytest.mark.parametrize("args,needle", [
    (["calibration", "make", "--data", "d.npz", "-o", "d.npz"], "is the input"),
    (["calibration", "make", "--data", "d.npz", "-o", "./sub/../d.npz"], "is the input"),
    (["calibration", "make", "--data", "link.npz", "-o", "d.npz"], "is the input"),
    (["export", "m.drsn", "-o", "m.onnx", "--data", "m.json"], "is the input"),
    (["quantize", "m.drsn", "--calib", "cal.npz", "-o", "cal.onnx", "--data", "cal.json"], "is the input"),
    (["train", "--data", "d.npz", "-o", "dl.drsn"], "is the input"),
    (["evaluate", "m.drsn", "--data", "d.npz", "--plot", "d.npz"], "is the input"),
    (["evaluate", "m.drsn", "--plot", "m.drsn"], "is the input"),
    (["import", "m.drsn", "-o", "m.drsn"], "is the input"),
    (["check", "--target", "host", "--model", "m.drsn", "--report", "."], "holds the input"),
])
def test_output_onto_an_input_is_refused(work, args, needle):
    cwd = work("d.npz", "m.drsn", "cal.npz")
    (cwd / "sub").mkdir()
    (cwd / "link.npz").symlink_to(cwd / "d.npz")
    (cwd / "dl.drsn").symlink_to(cwd / "d.npz")  # an output name that is the dataset under another name
    (cwd / "m.json").write_text("{}")  # a user's file that export's sidecar would replace
    (cwd / "cal.json").write_text("{}")
    expect(args, cwd, "input", contains=needle)


def test_data_import_into_its_own_source_folder_is_refused(work):
    cwd = work.cwd
    for cls in ("a", "b"):
        (cwd / "rec" / cls).mkdir(parents=True)
        for r in range(2):
            np.save(cwd / "rec" / cls / f"r{r}.npy", np.random.default_rng(r).standard_normal(5000).astype(np.float32))
    for out in ("rec/a/r0.npz", "rec/new.npz"):
        expect(["data", "import", "rec", "-o", out, "--fs", "12000"], cwd, "input", contains="inside the input folder")
    (cwd / "map.json").write_text('{"r*": "a"}')
    expect(["data", "import", "rec", "--labels", "map.json", "-o", "map.npz", "--fs", "12000"], cwd, "input",
           contains="is the input")


@pytest.mark.parametrize("out,needle", [
    ("inputs", "holds the input"),       # the folder holding the model and the calibration set
    (".", "current folder"),
    ("..", "current folder"),
    ("mine", "not empty"),               # a folder of the user's own files
    ("file.txt", "is a file"),
])
def test_build_output_folder_cannot_destroy_user_files(work, out, needle):
    cwd = work.cwd
    (cwd / "inputs").mkdir()
    work("m.drsn", "cal.npz")
    for n in ("m.drsn", "cal.npz", "cal.json"):
        (cwd / n).rename(cwd / "inputs" / n)
    (cwd / "mine").mkdir()
    (cwd / "mine" / "thesis.tex").write_text("years of work")
    (cwd / "file.txt").write_text("x")
    expect(["build", "inputs/m.drsn", "--calib", "inputs/cal.npz", "--target", "host", "-o", out], cwd, "input",
           contains=needle)
