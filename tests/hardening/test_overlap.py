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


def _user_files(cwd):
    (cwd / "mine").mkdir()
    (cwd / "mine" / "thesis.tex").write_text("years of work")
    (cwd / "notes.txt").write_text("my notes\n")
    np.save(cwd / "rec.npy", np.zeros(4096, np.float32))


@pytest.mark.parametrize("args,needle", [
    (["benchmark", "m.drsn", "--work", "."], "holds the input"),
    (["benchmark", "m.drsn", "--work", "m.drsn"], "is a file"),
    (["benchmark", "m.drsn", "--work", "mine"], "not empty"),         # builds would be written among them
    (["benchmark", "m.drsn", "--work", "w", "--report", "mine"], "not empty"),
    (["benchmark", "m.drsn", "--work", "w", "--report", "."], "holds the input"),
    (["benchmark", "m.drsn", "--work", "w", "--data", "d.npz", "--report", "d.npz"], "is a file"),
    (["benchmark", "--work", "w", "--data", "d.npz", "--report", "notes.txt"], "is a file"),
    (["check", "--target", "host", "--model", "m.drsn", "--report", "mine"], "not empty"),
    (["check", "--target", "host", "--model", "m.drsn", "--report", "notes.txt"], "is a file"),
    (["monitor", "m.drsn", "--source", "rec.npy", "-o", "m.drsn"], "is the input"),
    (["monitor", "--source", "rec.npy", "-o", "rec.npy"], "is the input"),
    (["monitor", "--source", "rec.npy", "-o", "notes.txt"], "not written by drsn-edge"),
    (["monitor", "--source", "rec.npy", "-o", "mine"], "is a directory"),
    (["monitor", "--source", "rec.npy", "-o", "."], "is a directory"),
    (["monitor", "--source", "rec.npy", "-o", "/dev/null/x.jsonl"], "is a file"),
    # the alert queue is rewritten (compacted, a torn tail cut): never an input, the output or a user's file
    (["monitor", "--source", "rec.npy", "--mqtt", "mqtt://127.0.0.1:1/t", "--alert-queue", "rec.npy"], "is the input"),
    (["monitor", "m.drsn", "--source", "rec.npy", "--mqtt", "mqtt://127.0.0.1:1/t", "--alert-queue", "m.drsn"],
     "is the input"),
    (["monitor", "--source", "rec.npy", "--mqtt", "mqtt://127.0.0.1:1/t", "--alert-queue", "notes.txt"],
     "not written by drsn-edge"),
    (["monitor", "--source", "rec.npy", "--mqtt", "mqtt://127.0.0.1:1/t", "--alert-queue", "q.jsonl", "-o", "q.jsonl"],
     "is the input"),
    (["guard", "fit", "m.drsn", "--data", "d.npz", "-o", "d.npz"], "is the input"),
    (["guard", "fit", "m.drsn", "--data", "d.npz", "-o", "d.json"], "is the input"),
])
def test_report_work_and_stream_outputs_cannot_destroy_user_files(work, args, needle):
    cwd = work("d.npz", "m.drsn")
    _user_files(cwd)
    expect(args, cwd, "input", contains=needle)


def test_monitor_out_is_created_only_by_a_run_that_writes(work):
    """A run that fails before its first line creates no --out file; a previous monitor output is appended to."""
    cwd = work("m.drsn")
    expect(["monitor", "m.drsn", "--source", "missing.npy", "-o", "new.jsonl"], cwd, "input", contains="missing.npy")
    (cwd / "old.jsonl").write_text('{"type":"summary","windows":3}\n')
    expect(["monitor", "m.drsn", "--source", "missing.npy", "-o", "old.jsonl"], cwd, "input", contains="missing.npy")


@pytest.mark.parametrize("report,needle", [("b", "is the input"), ("b/rep", "inside the input folder"),
                                           ("mine", "not empty"), ("notes.txt", "is a file")])
def test_profile_report_cannot_destroy_user_files(work, build_asset, report, needle):
    cwd = work(build_asset)
    _user_files(cwd)
    expect(["profile", build_asset, "--report", report, "--repeats", "1", "--warmup", "0", "--no-sweep"], cwd,
           "input", contains=needle)


def test_a_report_replaces_only_its_own_files(work, build_asset):
    """A previous report is replaced; a folder of the user's takes the report files only with --force, and
    keeps everything else."""
    cwd = work(build_asset)
    _user_files(cwd)
    base = ["profile", build_asset, "--repeats", "1", "--warmup", "0", "--no-sweep"]
    (cwd / "rep").mkdir()
    (cwd / "rep" / "profile.json").write_text("{}")
    names = ["profile.json", "profile.md", "profile.png"]
    expect([*base, "--report", "rep"], cwd, "ok", outputs=[f"rep/{n}" for n in names])
    expect([*base, "--report", "mine", "--force"], cwd, "ok", outputs=[f"mine/{n}" for n in names])
    assert sorted(p.name for p in (cwd / "mine").iterdir()) == sorted(names + ["thesis.tex"])
    assert (cwd / "mine" / "thesis.tex").read_text() == "years of work"


def test_benchmark_work_folder_of_earlier_runs_is_ours(tmp_path):
    """Builds, the work targets and a report make a work folder drsn-edge wrote; anything else does not."""
    from drsn_edge.benchmark import guard_work
    from drsn_edge.errors import InputError

    w = tmp_path / "w"
    (w / "targets").mkdir(parents=True)
    (w / "targets" / "bench-litert.toml").write_text("")
    (w / "onnxruntime").mkdir()
    (w / "onnxruntime" / "build.json").write_text("{}")
    (w / "benchmark.json").write_text("{}")
    (w / ".benchmark.json.123.x").write_text("")  # a killed run's temporary
    assert guard_work(w, None, [], False) == w
    for extra in ("targets/mine.toml", "notes.txt", "half/file"):
        p = w / extra
        p.parent.mkdir(exist_ok=True)
        p.write_text("x")
        with pytest.raises(InputError, match="not empty"):
            guard_work(w, None, [], False)
        assert guard_work(w, None, [], True) == w
        p.unlink()
        if p.parent != w and p.parent.name != "targets":
            p.parent.rmdir()
