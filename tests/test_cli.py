import json
import subprocess
import sys

import numpy as np
import pytest

from .conftest import run_cli


def test_help_does_not_import_torch_or_backends():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from drsn_edge.cli import main\n"
        "for args in (['--help'], ['data', '--help'], ['train', '--help'], ['evaluate', '--help']):\n"
        "    r = CliRunner().invoke(main, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'scipy', 'matplotlib', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_version():
    from drsn_edge import __version__

    r = run_cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_every_command_has_help():
    for args in (["data", "synth"], ["data", "import"], ["data", "info"], ["train"], ["evaluate"], ["models"]):
        r = run_cli(*args, "--help")
        assert r.returncode == 0 and "--json" in r.stdout, args


def test_synth_then_info_json(tmp_path):
    out = tmp_path / "d.npz"
    r = run_cli("data", "synth", "-o", out, "--windows-per-class", "6", "--recordings-per-class", "3",
                "--classes", "normal,IR021", "--noise", "gaussian,pink", "--snr", "-5,0", "--json")
    assert r.returncode == 0, r.stderr
    man = json.loads(r.stdout)
    assert man["class_names"] == ["normal", "IR021"] and man["n"] == 12
    assert man["noise_grid"] == {"gaussian": [-5.0, 0.0], "pink": [-5.0, 0.0]}
    r = run_cli("data", "info", out, "--json")
    info = json.loads(r.stdout)
    assert info["counts"]["train"]["recordings"] == 2 and info["window"] == 2048 and info["fs"] == 12000
    r = run_cli("data", "info", out)
    assert r.returncode == 0 and "IR021" in r.stdout and "gaussian" in r.stdout


def test_sweep_mode_replicates_every_cell(tmp_path):
    out = tmp_path / "d.npz"
    r = run_cli("data", "synth", "-o", out, "--windows-per-class", "3", "--recordings-per-class", "3",
                "--classes", "normal,OR007", "--noise", "all", "--snr", "-5:5:5", "--noise-mode", "sweep", "--json")
    man = json.loads(r.stdout)
    assert man["n"] == 6 * (1 + 3 * 3)


@pytest.mark.parametrize("args,needle", [
    (["data", "synth", "-o", "x.npz", "--snr", "abc", "--noise", "all"], "cannot read SNR"),
    (["data", "synth", "-o", "x.npz", "--noise", "brown", "--snr", "0"], "unknown noise"),
    (["data", "synth", "-o", "x.npz", "--classes", "IR999"], "unknown class"),
    (["data", "synth", "-o", "x.txt"], "end in .npz"),
    (["data", "synth", "-o", "x.npz", "--split", "0.5,0.5"], "three fractions"),
    (["data", "info", "missing.npz"], "does not exist"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, needle):
    r = subprocess.run([sys.executable, "-m", "drsn_edge", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_input_json_error_object(tmp_path):
    r = run_cli("data", "info", tmp_path / "missing.npz", "--json")
    assert r.returncode == 2
    obj = json.loads(r.stdout)
    assert obj["exit_code"] == 2 and "does not exist" in obj["error"]


def test_corrupt_dataset_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    r = run_cli("data", "info", bad)
    assert r.returncode == 2 and "not a readable dataset" in r.stderr


def test_train_and_evaluate_cli(tiny_data, tiny_model, tmp_path):
    plot = tmp_path / "eval.png"
    r = run_cli("evaluate", tiny_model, "--data", tiny_data, "--noise", "gaussian", "--snr", "0,5",
                "--plot", plot, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    conf = np.asarray(rep["confusion"])
    assert rep["accuracy"] == np.trace(conf) / rep["n"]  # the right answers lie on the diagonal
    assert set(rep["per_snr"]) == {"none", "gaussian"} and set(rep["per_snr"]["gaussian"]) == {"0", "5"}
    assert rep["n"] == 3 * rep["per_snr_n"]["none"]["clean"]
    assert len(rep["per_class"]) == 10 and np.asarray(rep["confusion"]).sum() == rep["n"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_cli("evaluate", tiny_model, "--data", tiny_data)
    assert r.returncode == 0 and "confusion matrix" in r.stdout


def test_evaluate_takes_a_subset_of_classes_and_refuses_unknown_ones(tiny_model, tmp_path):
    from drsn_edge.data.dataset import load_dataset, save_dataset

    out = tmp_path / "two.npz"
    run_cli("data", "synth", "-o", out, "--windows-per-class", "3", "--recordings-per-class", "3",
            "--classes", "IR007,normal")
    r = run_cli("evaluate", tiny_model, "--data", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["classes_present"] == ["normal", "IR007"]  # in the model's order
    ds = load_dataset(out)
    ds.class_names = ["pump", "normal"]
    save_dataset(ds, tmp_path / "pump.npz")
    r = run_cli("evaluate", tiny_model, "--data", tmp_path / "pump.npz")
    assert r.returncode == 2 and "class(es) ['pump'] that the model does not know" in r.stderr


def test_evaluate_refuses_non_bundle(tmp_path):
    fake = tmp_path / "m.drsn"
    fake.write_bytes(b"\x80\x04garbage")
    r = run_cli("evaluate", fake, "--windows-per-class", "2")
    assert r.returncode == 2 and "not a drsn-edge model bundle" in r.stderr
