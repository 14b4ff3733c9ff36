import json
from pathlib import Path

import pytest

from drsn_edge.errors import InputError
from drsn_edge.targets import (Target, all_targets, builtin_targets_dir, get_target, jetson_targets, load_target_file,
                               match_jetson, parse_l4t_release, targets_dirs)

from .conftest import run_cli

SHIPPED = sorted(builtin_targets_dir().glob("*.toml"))
EXPECTED = {"stm32h743", "stm32f746", "nrf52840", "esp32s3", "rp2040", "qemu-m4", "qemu-m7", "qemu-m33", "qemu-m55", "host", "jetson-nano",
            "jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin", "jetson-thor"}

MCU = """name = "{name}"
family = "mcu"
backend = "tflm"
description = "test board"
[hardware]
cpu = "cortex-m4"
clock_mhz = 100
flash_kb = 512
ram_kb = 128
{hw_extra}
[device]
transport = "serial"
[check]
max_latency_ms = 50.0
"""


def _write(folder: Path, name: str, text: str | None = None, hw_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.toml"
    p.write_text(text if text is not None else MCU.format(name=name, hw_extra=hw_extra))
    return p


@pytest.fixture(autouse=True)
def _no_env_dirs(monkeypatch):
    monkeypatch.delenv("DRSN_EDGE_TARGETS_DIR", raising=False)


# ------------------------------------------------------------------ shipped profiles
def test_every_shipped_file_loads_and_names_equal_stems():
    assert {p.stem for p in SHIPPED} == EXPECTED
    for p in SHIPPED:
        t = load_target_file(p)
        assert isinstance(t, Target) and t.name == p.stem and t.path == p.resolve()
        assert t.description
        assert 0 < t.check["min_accuracy"] <= 1 and t.check["max_latency_ms"] > 0
    assert set(all_targets()) == EXPECTED


def test_family_backend_and_transport_of_shipped_profiles():
    ts = all_targets()
    for t in ts.values():
        assert {"mcu": "c", "jetson": "tensorrt"}.get(t.family, t.backend) == t.backend
    assert ts["host"].family == "host" and ts["host"].backend == "host" and ts["host"].transport == "local"
    assert all(t.transport == "ssh" for t in jetson_targets())
    assert ts["qemu-m4"].device == {"transport": "qemu", "machine": "mps2-an386"}
    assert ts["qemu-m7"].device == {"transport": "qemu", "machine": "mps2-an500"}
    assert ts["qemu-m7"].hardware["qemu_machine"] == "mps2-an500" and ts["qemu-m7"].hardware["cpu"] == "cortex-m7"


def test_mcu_facts():
    ts = all_targets()
    h7 = ts["stm32h743"]
    assert h7.flash_bytes == 2048 * 1024 and h7.ram_bytes == 1024 * 1024 and h7.ram_budget_bytes == 512 * 1024
    assert h7.hardware["cpu"] == "cortex-m7" and h7.hardware["clock_mhz"] == 480 and h7.hardware["fpu"] == "fpv5-d16"
    f7 = ts["stm32f746"]
    assert (f7.hardware["clock_mhz"], f7.hardware["flash_kb"], f7.hardware["ram_kb"], f7.hardware["fpu"]) == \
        (216, 1024, 320, "fpv5-sp-d16")
    nrf = ts["nrf52840"]
    assert (nrf.hardware["cpu"], nrf.hardware["clock_mhz"], nrf.flash_bytes, nrf.ram_bytes, nrf.hardware["fpu"]) == \
        ("cortex-m4", 64, 1024 * 1024, 256 * 1024, "fpv4-sp-d16")
    esp = ts["esp32s3"]
    assert (esp.hardware["cpu"], esp.hardware["clock_mhz"], esp.hardware["flash_kb"], esp.hardware["ram_kb"],
            esp.hardware["fpu"], esp.hardware["cmsis_nn"]) == ("xtensa-lx7", 240, 8192, 512, "none", False)
    rp = ts["rp2040"]
    assert (rp.hardware["cpu"], rp.hardware["clock_mhz"], rp.hardware["flash_kb"], rp.hardware["ram_kb"],
            rp.hardware["fpu"]) == ("cortex-m0plus", 133, 2048, 264, "none")
    # latency thresholds scale with the clock: slower chips get more time
    assert h7.check["max_latency_ms"] < f7.check["max_latency_ms"] < nrf.check["max_latency_ms"]
    for t in ts.values():
        if t.family == "mcu":
            assert t.ram_budget_bytes == int(t.ram_bytes * t.hardware["ram_share"])
        else:
            assert t.flash_bytes is None and t.ram_budget_bytes is None


def test_jetson_facts():
    ts = all_targets()
    on = ts["jetson-orin-nano"]
    assert (on.sm, on.tensorrt, on.dla_cores, on.jetpack, on.cuda) == (87, "10.3", 0, "6.2", "12.6")
    nx = ts["jetson-xavier-nx"]
    assert (nx.sm, nx.dla_cores, nx.tensorrt, nx.jetpack, nx.cuda) == (72, 2, "8.5", "5.1", "11.4")
    nano = ts["jetson-nano"]
    assert (nano.sm, nano.dla_cores, nano.tensorrt, nano.cuda) == (53, 0, "8.2", "10.2") and nano.jetpack.startswith("4.6")
    assert nano.ram_bytes == 4 * 1024 ** 3
    agx = ts["jetson-agx-orin"]
    assert (agx.sm, agx.dla_cores, agx.tensorrt, agx.jetpack) == (87, 2, "10.3", "6.2")
    thor = ts["jetson-thor"]
    assert (thor.sm, thor.dla_cores, thor.tensorrt, thor.jetpack, thor.cuda) == (110, 0, "10.13", "7.0", "13.0")
    assert {t.name for t in jetson_targets()} == {n for n in EXPECTED if n.startswith("jetson-")}
    assert ts["stm32h743"].sm is None and ts["stm32h743"].dla_cores is None


# ------------------------------------------------------------------ validation
def test_defaults_filled(tmp_path):
    t = load_target_file(_write(tmp_path, "board"))
    assert t.hardware["ram_share"] == 0.5 and t.hardware["fpu"] == "none" and t.hardware["cmsis_nn"] is False
    assert t.check["min_accuracy"] == 0.90 and t.check["max_drop_pp"] == 1.0
    assert t.ram_budget_bytes == 64 * 1024 and isinstance(t.hardware["clock_mhz"], float)


@pytest.mark.parametrize("section,line,key", [
    ("top", 'colour = "red"', "colour"),
    ("hardware", "gpu_count = 2", "hardware.gpu_count"),
    ("device", 'speed = "fast"', "device.speed"),
    ("check", "min_acc = 0.5", "check.min_acc"),
])
def test_unknown_key_names_file_and_key(tmp_path, section, line, key):
    text = MCU.format(name="board", hw_extra="")
    if section == "top":
        text = line + "\n" + text
    else:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{line}\n")
    p = _write(tmp_path, "board", text)
    with pytest.raises(InputError) as ei:
        load_target_file(p)
    msg = str(ei.value)
    assert str(p) in msg and f"'{key}'" in msg and "unknown key" in msg


def test_jetson_keys_are_unknown_on_an_mcu(tmp_path):
    with pytest.raises(InputError, match=r"board\.toml.*unknown key 'hardware\.sm'"):
        load_target_file(_write(tmp_path, "board", hw_extra="sm = 87"))


@pytest.mark.parametrize("family,backend", [("mcu", "tensorrt"), ("jetson", "tflm"), ("host", "tensorrt"),
                                            ("mcu", "litert")])
def test_wrong_family_backend(tmp_path, family, backend):
    text = MCU.format(name="board", hw_extra="").replace('family = "mcu"', f'family = "{family}"') \
        .replace('backend = "tflm"', f'backend = "{backend}"')
    with pytest.raises(InputError, match=f"backend '{backend}' does not fit family '{family}'"):
        load_target_file(_write(tmp_path, "board", text))


@pytest.mark.parametrize("hw_extra,needle", [
    ('flash_kb = "512"', "'hardware.flash_kb' must be an integer"),
    ("ram_kb = 12.5", "'hardware.ram_kb' must be an integer"),
    ("ram_kb = true", "'hardware.ram_kb' must be an integer"),
    ("ram_share = 0", "'hardware.ram_share' must be > 0 and ≤ 1"),
    ("ram_share = 1.5", "'hardware.ram_share' must be > 0 and ≤ 1"),
    ("clock_mhz = -1", "'hardware.clock_mhz' must be > 0"),
    ('fpu = "vfp"', "'hardware.fpu' must be one of"),
    ('cmsis_nn = "yes"', "'hardware.cmsis_nn' must be true or false"),
])
def test_bad_types_and_ranges(tmp_path, hw_extra, needle):
    key = hw_extra.split(" = ")[0]
    text = "\n".join(ln for ln in MCU.format(name="board", hw_extra="").splitlines() if not ln.startswith(key + " "))
    text = text.replace("[hardware]\n", f"[hardware]\n{hw_extra}\n")
    with pytest.raises(InputError) as ei:
        load_target_file(_write(tmp_path, "board", text))
    assert needle in str(ei.value) and "board.toml" in str(ei.value)


@pytest.mark.parametrize("old,new,needle", [
    ('name = "board"', 'name = "other"', "must equal the file name 'board'"),
    ('family = "mcu"', 'family = "fpga"', "'family' must be one of"),
    ("max_latency_ms = 50.0", "min_accuracy = 1.5", "'check.min_accuracy' must be"),
    ("max_latency_ms = 50.0", 'max_latency_ms = "fast"', "'check.max_latency_ms' must be a number"),
    ('transport = "serial"', 'transport = "ssh"', "'device.transport' 'ssh' does not fit family 'mcu'"),
    ('transport = "serial"', 'transport = "serial"\nhost = "x"', "'device.host' does not apply to transport 'serial'"),
    ('transport = "serial"', 'transport = "serial"\nport = 22', "'device.port' must be a serial device path"),
    ('transport = "serial"', 'transport = "qemu"', "needs 'device.machine'"),
    ('cpu = "cortex-m4"\n', "", "missing required key 'hardware.cpu'"),
    ("[check]", "check = 3\n[x]", "unknown key 'x'"),
    ('description = "test board"', "description = ", "not valid TOML"),
])
def test_other_errors(tmp_path, old, new, needle):
    text = MCU.format(name="board", hw_extra="")
    assert old in text
    with pytest.raises(InputError) as ei:
        load_target_file(_write(tmp_path, "board", text.replace(old, new, 1)))
    assert needle in str(ei.value) and "board.toml" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_qemu_machine_defaults_from_hardware(tmp_path):
    text = MCU.format(name="board", hw_extra='qemu_machine = "mps2-an386"').replace('transport = "serial"',
                                                                                   'transport = "qemu"')
    assert load_target_file(_write(tmp_path, "board", text)).device == {"transport": "qemu", "machine": "mps2-an386"}


def test_missing_file():
    with pytest.raises(InputError, match="does not exist"):
        load_target_file("/nonexistent/x.toml")


# ------------------------------------------------------------------ lookup
def test_unknown_target_suggests_nearest():
    with pytest.raises(InputError) as ei:
        get_target("stm32h74")
    msg = str(ei.value)
    assert msg.startswith("unknown target 'stm32h74'; did you mean stm32h743") and "stm32f746" in msg
    assert "drsn-edge targets lists all" in msg
    with pytest.raises(InputError, match=r"unknown target 'zzzz' \(drsn-edge targets"):
        get_target("zzzz")


def test_jetson_alias_is_resolved_from_the_device():
    with pytest.raises(InputError) as ei:
        get_target("jetson")
    msg = str(ei.value)
    assert "--device" in msg and "jetson-orin-nano" in msg and "jetson-thor" in msg


def test_get_target_by_file_path(tmp_path):
    p = _write(tmp_path, "myboard")
    assert get_target(str(p)).name == "myboard"


def test_extra_dir_adds_and_overrides(tmp_path):
    user = tmp_path / "user"
    _write(user, "myboard")
    _write(user, "stm32h743", MCU.format(name="stm32h743", hw_extra="").replace("ram_kb = 128", "ram_kb = 512"))
    ts = all_targets([user])
    assert "myboard" in ts and ts["stm32h743"].ram_bytes == 512 * 1024 and ts["stm32h743"].path.parent == user.resolve()
    assert "nrf52840" in ts
    assert get_target("myboard", [user]).hardware["clock_mhz"] == 100
    assert targets_dirs([user])[-1] == user
    with pytest.raises(InputError, match="unknown target 'myboard'"):
        get_target("myboard")


def test_env_dirs_then_extra_dirs(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _write(a, "myboard", hw_extra="ram_share = 0.25")
    _write(b, "myboard", hw_extra="ram_share = 0.75")
    _write(c, "myboard", hw_extra="ram_share = 1.0")
    import os

    monkeypatch.setenv("DRSN_EDGE_TARGETS_DIR", os.pathsep.join([str(a), str(b)]))
    assert targets_dirs()[1:] == [a, b]
    assert get_target("myboard").hardware["ram_share"] == 0.75
    assert get_target("myboard", [c]).hardware["ram_share"] == 1.0
    monkeypatch.setenv("DRSN_EDGE_TARGETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="DRSN_EDGE_TARGETS_DIR"):
        all_targets()


def test_bad_user_file_and_missing_dir(tmp_path):
    _write(tmp_path / "u", "broken", hw_extra="warp = 9")
    with pytest.raises(InputError, match=r"broken\.toml: unknown key 'hardware\.warp'"):
        all_targets([tmp_path / "u"])
    with pytest.raises(InputError, match="does not exist"):
        all_targets([tmp_path / "nope"])


# ------------------------------------------------------------------ Jetson identification
@pytest.mark.parametrize("release,model,expected", [
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025",
     "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "jetson-orin-nano"),
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", "Jetson AGX Orin Developer Kit",
     "jetson-agx-orin"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", None, "jetson-xavier-nx"),
    ("# R35 (release), REVISION: 2.1", "NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64", None, "jetson-nano"),
    ("# R32 (release), REVISION: 7.6", "NVIDIA Jetson Nano Developer Kit\x00", "jetson-nano"),
    ("# R38 (release), REVISION: 2.1, GCID: 41844464, BOARD: generic, EABI: aarch64", "NVIDIA Jetson AGX Thor Developer Kit",
     "jetson-thor"),
    ("# R38 (release), REVISION: 2.0", None, "jetson-thor"),
    ("36.4.3", "NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("", "NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
])
def test_match_jetson(release, model, expected):
    assert match_jetson(release, model).name == expected


def test_match_jetson_ambiguous_or_unfit():
    r36 = "# R36 (release), REVISION: 4.3"
    with pytest.raises(InputError) as ei:
        match_jetson(r36)
    assert "jetson-orin-nano" in str(ei.value) and "jetson-agx-orin" in str(ei.value) and "model" in str(ei.value)
    with pytest.raises(InputError, match="is for JetPack 6.2"):  # Orin Nano still on JetPack 5
        match_jetson("# R35 (release), REVISION: 4.1", "NVIDIA Jetson Orin Nano Developer Kit")
    with pytest.raises(InputError, match="no target profile fits the model 'NVIDIA Jetson Orin NX"):
        match_jetson(r36, "NVIDIA Jetson Orin NX Engineering Reference Developer Kit")
    with pytest.raises(InputError, match="not a known Jetson Linux release"):
        match_jetson("# R99 (release), REVISION: 1.0")
    with pytest.raises(InputError, match="cannot read an L4T release"):
        match_jetson("garbage")
    with pytest.raises(InputError, match="jetson-nano"):
        match_jetson("", None)


def test_match_jetson_uses_user_profiles(tmp_path):
    p = _write(tmp_path, "jetson-orin-nx", (builtin_targets_dir() / "jetson-orin-nano.toml").read_text()
               .replace('name = "jetson-orin-nano"', 'name = "jetson-orin-nx"'))
    t = match_jetson("# R36 (release), REVISION: 4.3", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                     [p.parent])
    assert t.name == "jetson-orin-nx"


def test_parse_l4t_release():
    assert parse_l4t_release("# R36 (release), REVISION: 4.3, GCID: 1") == (36, "4.3")
    assert parse_l4t_release("R35.4.1") == (35, "4.1")


# ------------------------------------------------------------------ CLI
def test_cli_list_and_json():
    r = run_cli("targets", timeout=60)
    assert r.returncode == 0, r.stderr
    for name in ("stm32h743", "jetson-orin-nano", "qemu-m4", "host"):
        assert name in r.stdout
    assert "RAM budget" in r.stdout and "512 KB" in r.stdout
    r = run_cli("targets", "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert {t["name"] for t in obj["targets"]} == EXPECTED
    h7 = next(t for t in obj["targets"] if t["name"] == "stm32h743")
    assert h7["ram_budget_bytes"] == 512 * 1024 and h7["hardware"]["cpu"] == "cortex-m7"


def test_cli_show(tmp_path):
    r = run_cli("targets", "jetson-xavier-nx", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "hardware.dla_cores" in r.stdout and "hardware.sm" in r.stdout and "72" in r.stdout
    r = run_cli("targets", "stm32h743", "--json", timeout=60)
    obj = json.loads(r.stdout)
    assert obj["name"] == "stm32h743" and obj["flash_bytes"] == 2048 * 1024 and obj["device"]["transport"] == "serial"
    assert obj["check"]["max_latency_ms"] == 100.0


def test_cli_targets_dir_and_env(tmp_path):
    user = tmp_path / "user"
    _write(user, "myboard")
    r = run_cli("targets", "myboard", "--targets-dir", user, "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hardware"]["ram_kb"] == 128
    r = run_cli("targets", "--json", env={"DRSN_EDGE_TARGETS_DIR": str(user)}, timeout=60)
    obj = json.loads(r.stdout)
    assert "myboard" in {t["name"] for t in obj["targets"]} and obj["dirs"][-1] == str(user)


def test_cli_errors():
    r = run_cli("targets", "stm32h74", timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "did you mean stm32h743" in lines[0]
    r = run_cli("targets", "jetson", "--json", timeout=60)
    assert r.returncode == 2
    obj = json.loads(r.stdout)
    assert obj["exit_code"] == 2 and "--device" in obj["error"]
