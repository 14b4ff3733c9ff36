"""Device profiles ("targets"): one TOML file per board under the repo's `targets/` folder, plus user folders
(`DRSN_EDGE_TARGETS_DIR`, `--targets-dir`) that add profiles or override shipped ones of the same name.

A profile says what the board is (family, runtime backend, hardware facts), how to reach it by default
([device]) and which thresholds its on-device checks use ([check]). Files are validated strictly: an unknown
key, a wrong type or an out-of-range value is an InputError naming the file and the key."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .backends import BACKENDS as _BACKEND_REGISTRY
from .backends import family_backends
from .devices.base import TRANSPORT_SCHEMA
from .errors import InputError
from .families import FAMILIES as _FAMILY_REGISTRY
from .families import get_family
from .families.base import NON_NEGATIVE as _NONNEG
from .families.base import POSITIVE as _POS
from .families.base import field_spec as _f
from .families.mcu import CPUS as MCU_CPUS
from .families.mcu import DEFAULT_RAM_SHARE
from .families.mcu import FPUS as MCU_FPUS

ENV_DIRS = "DRSN_EDGE_TARGETS_DIR"

# what a profile may name comes from the registries: a new family, backend or transport is one module + one
# line there (drsn_edge/families, drsn_edge/backends, drsn_edge/devices)
FAMILIES = tuple(_FAMILY_REGISTRY)
BACKENDS = tuple(_BACKEND_REGISTRY)
FAMILY_BACKENDS = {f: tuple(dict.fromkeys((*family_backends(f), *get_family(f).backends))) for f in FAMILIES}
FAMILY_TRANSPORTS = {f: tuple(dict.fromkeys((*(t for t, (fams, _) in TRANSPORT_SCHEMA.items() if f in fams),
                                             get_family(f).default_transport, *get_family(f).transports)))
                     for f in FAMILIES}
DEFAULT_TRANSPORT = {f: get_family(f).default_transport for f in FAMILIES}
TRANSPORTS = tuple(TRANSPORT_SCHEMA)

# L4T (Jetson Linux) major release → JetPack major version
L4T_TO_JETPACK = {32: 4, 34: 5, 35: 5, 36: 6, 38: 7}
# what the brief's users expect to read in messages
JETPACK_OF_L4T = {32: "4.6", 34: "5.0", 35: "5.1", 36: "6.x", 38: "7.x"}
# SoC named in /proc/device-tree/compatible → GPU compute capability (SM). Thor is sm 110 from CUDA 13 on
# (CUDA 12.8/12.9 called it sm 101).
TEGRA_SM = {"tegra210": 53, "tegra186": 62, "tegra194": 72, "tegra234": 87, "tegra264": 110}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


# ------------------------------------------------------------------ schema (field_spec in drsn_edge/families/base.py)
TOP_KEYS = {
    "name": _f("str", True),
    "family": _f("str", True, check=FAMILIES),
    "backend": _f("str", True, check=BACKENDS),
    "description": _f("str", default=""),
}
SECTIONS = ("hardware", "device", "check")

HARDWARE = {f: get_family(f).hardware for f in FAMILIES}

DEVICE = {
    "transport": _f("str", check=TRANSPORTS),
    "port": None,  # str for serial, int for ssh: checked by hand
    "baud": _f("int", check=_POS),
    "host": _f("str"),
    "user": _f("str"),
    "machine": _f("str"),
}
TRANSPORT_KEYS = {t: set(keys) for t, (_, keys) in TRANSPORT_SCHEMA.items()}

CHECK = {
    "min_accuracy": _f("float", default=0.90, check=(0, 1, True)),
    "max_drop_pp": _f("float", default=1.0, check=_NONNEG),
    "max_latency_ms": _f("float", check=_POS),
}


# ------------------------------------------------------------------ the profile
@dataclass(frozen=True)
class Target:
    name: str
    family: str
    backend: str
    description: str
    hardware: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    path: Path | None = None
    # `--target jetson` resolved on this machine (drsn_edge.jetson_local): what was detected here. The
    # hardware facts then are this machine's (its TensorRT, SM, JetPack), not the profile file's.
    detected: dict | None = None

    # -- MCU memory
    @property
    def flash_bytes(self) -> int | None:
        kb = self.hardware.get("flash_kb")
        return None if kb is None else int(kb) * 1024

    @property
    def ram_bytes(self) -> int | None:
        kb = self.hardware.get("ram_kb")
        if kb is not None:
            return int(kb) * 1024
        gb = self.hardware.get("ram_gb")
        return None if gb is None else int(gb * 1024 ** 3)

    @property
    def ram_budget_bytes(self) -> int | None:
        """RAM the tool may use for the tensor arena and I/O buffers (MCUs: ram × ram_share)."""
        if self.family != "mcu" or self.ram_bytes is None:
            return None
        return int(self.ram_bytes * self.hardware.get("ram_share", DEFAULT_RAM_SHARE))

    @property
    def runtime_code_bytes(self) -> int | None:
        kb = self.hardware.get("runtime_code_kb")
        return None if kb is None else int(kb) * 1024

    # -- Jetson software stack
    @property
    def sm(self) -> int | None:
        return self.hardware.get("sm")

    @property
    def tensorrt(self) -> str | None:
        return self.hardware.get("tensorrt")

    @property
    def jetpack(self) -> str | None:
        return self.hardware.get("jetpack")

    @property
    def cuda(self) -> str | None:
        return self.hardware.get("cuda")

    @property
    def dla_cores(self) -> int | None:
        return self.hardware.get("dla_cores") if self.family == "jetson" else None

    @property
    def transport(self) -> str:
        return self.device.get("transport", DEFAULT_TRANSPORT[self.family])

    def to_dict(self) -> dict:
        """Every field plus the derived sizes, as plain JSON types."""
        return {
            "name": self.name, "family": self.family, "backend": self.backend, "description": self.description,
            "hardware": dict(self.hardware), "device": dict(self.device), "check": dict(self.check),
            "path": str(self.path) if self.path else None,
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes, "ram_budget_bytes": self.ram_budget_bytes,
            "runtime_code_bytes": self.runtime_code_bytes, "sm": self.sm, "tensorrt": self.tensorrt,
            "jetpack": self.jetpack, "cuda": self.cuda, "dla_cores": self.dla_cores, "detected": self.detected,
        }


# ------------------------------------------------------------------ validation
def _type_name(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table",
            list: "an array"}.get(type(v), type(v).__name__)


def _value(path: Path, key: str, v, spec: dict):
    kind, check = spec["kind"], spec["check"]
    where = f"{path}: '{key}'"
    if kind == "str":
        if not isinstance(v, str):
            raise InputError(f"{where} must be a string, got {_type_name(v)}")
    elif kind == "bool":
        if not isinstance(v, bool):
            raise InputError(f"{where} must be true or false, got {_type_name(v)}")
    elif kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(f"{where} must be an integer, got {_type_name(v)}")
    elif kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{where} must be a number, got {_type_name(v)}")
        from .validate import finite

        v = finite(where, v)
    if check == "version":
        if not _VERSION_RE.match(v):
            raise InputError(f"{where} must be a version like 10.3, got '{v}'")
    elif isinstance(check, tuple) and check and isinstance(check[0], str):
        if v not in check:
            raise InputError(f"{where} must be one of {', '.join(check)}, got '{v}'")
    elif isinstance(check, tuple):
        lo, hi, lo_incl = check
        if (lo is not None and (v < lo or (v == lo and not lo_incl))) or (hi is not None and v > hi):
            rng = f"{'≥' if lo_incl else '>'} {lo}" + (f" and ≤ {hi}" if hi is not None else "")
            raise InputError(f"{where} must be {rng}, got {v}")
    return v


def _section(path: Path, section: str, raw, schema: dict, fill_defaults: bool = True) -> dict:
    prefix = f"{section}." if section else ""
    if not isinstance(raw, dict):
        raise InputError(f"{path}: '{section}' must be a table ([{section}]), got {_type_name(raw)}")
    for k in raw:
        if k not in schema:
            allowed = ", ".join(sorted(schema))
            raise InputError(f"{path}: unknown key '{prefix}{k}' (allowed in {f'[{section}]' if section else 'the top level'}: "
                             f"{allowed})")
    out = {}
    for k, spec in schema.items():
        if spec is None:  # validated by the caller
            if k in raw:
                out[k] = raw[k]
            continue
        if k in raw:
            out[k] = _value(path, prefix + k, raw[k], spec)
        elif spec["required"]:
            raise InputError(f"{path}: missing required key '{prefix}{k}'")
        elif fill_defaults and spec["default"] is not None:
            out[k] = spec["default"]
    return out


def load_target_file(path: str | Path) -> Target:
    """Read and validate one profile; every problem is an InputError naming the file and the key."""
    path = Path(path)
    from .limits import TOML_CAP, read_capped

    try:
        raw = tomllib.loads(read_capped(path, TOML_CAP, "target file").decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid TOML: not UTF-8 text") from None
    except FileNotFoundError:
        raise InputError(f"target file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read target file '{path}': {exc.strerror or exc}") from None

    for k in raw:
        if k not in TOP_KEYS and k not in SECTIONS:
            raise InputError(f"{path}: unknown key '{k}' (allowed: {', '.join(list(TOP_KEYS) + list(SECTIONS))})")
    top = _section(path, "", {k: v for k, v in raw.items() if k in TOP_KEYS}, TOP_KEYS)
    name, family, backend = top["name"], top["family"], top["backend"]
    if not _NAME_RE.match(name):
        raise InputError(f"{path}: 'name' must be lower-case letters, digits, '.', '_' or '-', got '{name}'")
    if name != path.stem:
        raise InputError(f"{path}: 'name' is '{name}' but must equal the file name '{path.stem}'")
    if backend not in FAMILY_BACKENDS[family]:
        raise InputError(f"{path}: backend '{backend}' does not fit family '{family}' "
                         f"(use {' or '.join(FAMILY_BACKENDS[family])})")

    hardware = _section(path, "hardware", raw.get("hardware", {}), HARDWARE[family])
    device = _device(path, family, hardware, raw.get("device", {}))
    check = _section(path, "check", raw.get("check", {}), CHECK)
    return Target(name=name, family=family, backend=backend, description=top.get("description", ""),
                  hardware=hardware, device=device, check=check, path=path.resolve())


def _device(path: Path, family: str, hardware: dict, raw) -> dict:
    dev = _section(path, "device", raw, DEVICE, fill_defaults=False)
    transport = dev.setdefault("transport", DEFAULT_TRANSPORT[family])
    if transport not in FAMILY_TRANSPORTS[family]:
        raise InputError(f"{path}: 'device.transport' '{transport}' does not fit family '{family}' "
                         f"(use {' or '.join(FAMILY_TRANSPORTS[family])})")
    for k in dev:
        if k != "transport" and k not in TRANSPORT_KEYS[transport]:
            raise InputError(f"{path}: key 'device.{k}' does not apply to transport '{transport}' "
                             f"(its keys: {', '.join(sorted(TRANSPORT_KEYS[transport])) or 'none'})")
    if "port" in dev:
        want_int = transport == "ssh"
        v = dev["port"]
        ok = (isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536) if want_int else isinstance(v, str)
        if not ok:
            raise InputError(f"{path}: 'device.port' must be "
                             f"{'a TCP port number (1..65535)' if want_int else 'a serial device path string'}, got {v!r}")
    if transport == "qemu":
        machine = dev.setdefault("machine", hardware.get("qemu_machine"))
        if not machine:
            raise InputError(f"{path}: transport 'qemu' needs 'device.machine' or 'hardware.qemu_machine'")
        if hardware.get("qemu_machine") and hardware["qemu_machine"] != machine:
            raise InputError(f"{path}: 'device.machine' '{machine}' differs from 'hardware.qemu_machine' "
                             f"'{hardware['qemu_machine']}'")
    return dev


# ------------------------------------------------------------------ lookup
def builtin_targets_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "targets"


def targets_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """Folders searched for profiles, lowest precedence first: the shipped `targets/`, then
    $DRSN_EDGE_TARGETS_DIR (os.pathsep-separated), then `extra` (e.g. --targets-dir)."""
    dirs = [builtin_targets_dir()]
    env = os.environ.get(ENV_DIRS, "")
    for part in env.split(os.pathsep):
        if part.strip():
            d = Path(part.strip()).expanduser()
            if not d.is_dir():
                raise InputError(f"{ENV_DIRS} names '{d}', which is not a folder")
            dirs.append(d)
    for part in extra or []:
        d = Path(part).expanduser()
        if not d.is_dir():
            raise InputError(f"targets folder '{d}' does not exist or is not a folder")
        dirs.append(d)
    return dirs


def all_targets(extra_dirs: list[str | Path] | None = None) -> dict[str, Target]:
    """Every profile by name (sorted); a later folder's profile replaces an earlier one of the same name."""
    found: dict[str, Target] = {}
    for d in targets_dirs(extra_dirs):
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.toml")):
            t = load_target_file(p)
            found[t.name] = t
    return dict(sorted(found.items()))


def jetson_targets(extra_dirs: list[str | Path] | None = None) -> list[Target]:
    return [t for t in all_targets(extra_dirs).values() if t.family == "jetson"]


def get_target(name: str, extra_dirs: list[str | Path] | None = None) -> Target:
    """The profile called `name` (or a .toml file path). `jetson` is an alias that only build/check resolve
    (drsn_edge.jetson_local, or the --device), so here it is an error that lists the Jetson profiles."""
    if name.endswith(".toml") and Path(name).is_file():
        return load_target_file(name)
    targets = all_targets(extra_dirs)
    if name in targets:
        return targets[name]
    if name == "jetson":
        names = ", ".join(t.name for t in targets.values() if t.family == "jetson") or "none"
        raise InputError(f"target 'jetson' is resolved when building or checking, from this machine or the "
                         f"--device; to look one up, name a profile: {names}")
    close = difflib.get_close_matches(name, list(targets), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"unknown target '{name}'{hint} (drsn-edge targets lists all)")


# ------------------------------------------------------------------ Jetson identification
_RELEASE_RE = re.compile(r"R(\d+)\s*\(release\)\s*,\s*REVISION:\s*(\d+(?:\.\d+)*)", re.IGNORECASE)
_DOTTED_RE = re.compile(r"\bR?(\d{2})\.(\d+(?:\.\d+)?)\b")


def parse_l4t_release(text: str) -> tuple[int, str]:
    """(major, revision) from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ...") or a dotted
    version such as "36.4.3" / "R36.4.3"."""
    m = _RELEASE_RE.search(text or "")
    if m is None:
        m = _DOTTED_RE.search(text or "")
    if m is None:
        snippet = " ".join((text or "").split())[:60]
        raise InputError(f"cannot read an L4T release from '{snippet}' (expected /etc/nv_tegra_release, "
                         f"e.g. '# R36 (release), REVISION: 4.3')")
    return int(m.group(1)), m.group(2)


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _model_matches(model: str, targets: list[Target]) -> list[Target]:
    """Profiles whose name words (without 'jetson') all appear in the model string; the most specific win."""
    words = _tokens(model)
    scored = []
    for t in targets:
        need = _tokens(t.name) - {"jetson"}
        if need and need <= words:
            scored.append((len(need), t))
    if not scored:
        return []
    best = max(s for s, _ in scored)
    return [t for s, t in scored if s == best]


def match_jetson(release_text: str | None, model: str | None = None,
                 extra_dirs: list[str | Path] | None = None) -> Target:
    """Pick the Jetson profile for a device from its /etc/nv_tegra_release text (L4T release → JetPack major)
    and, optionally, its /proc/device-tree/model string. InputError (listing the candidates) when that is
    not enough to decide or no profile fits."""
    jetsons = jetson_targets(extra_dirs)
    names = ", ".join(t.name for t in jetsons) or "none"
    candidates = list(jetsons)
    l4t = None
    if release_text and release_text.strip():
        major, rev = parse_l4t_release(release_text)
        l4t = f"L4T R{major}.{rev}"
        jp_major = L4T_TO_JETPACK.get(major)
        if jp_major is None:
            raise InputError(f"{l4t} is not a known Jetson Linux release (known: "
                             f"{', '.join(f'R{k} = JetPack {v}' for k, v in JETPACK_OF_L4T.items())}); "
                             f"add a profile with --targets-dir")
        l4t = f"{l4t} (JetPack {JETPACK_OF_L4T[major]})"
        candidates = [t for t in jetsons if _major(t.jetpack) == jp_major]
    elif not (model and model.strip()):
        raise InputError(f"give the device's /etc/nv_tegra_release or model string to pick one of: {names}")

    if model and model.strip():
        model_clean = " ".join(model.replace("\x00", " ").split())
        by_model = _model_matches(model_clean, jetsons)
        if not by_model:
            raise InputError(f"no target profile fits the model '{model_clean}' (profiles: {names}); "
                             f"add one with --targets-dir")
        fitting = [t for t in by_model if t in candidates]
        if not fitting:
            t = by_model[0]
            raise InputError(f"the device '{model_clean}' runs {l4t} but profile {t.name} is for JetPack {t.jetpack}; "
                             f"reflash to JetPack {t.jetpack} or add a profile with --targets-dir")
        candidates = fitting
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(f"no target profile fits {l4t} (profiles: "
                         f"{', '.join(f'{t.name} = JetPack {t.jetpack}' for t in jetsons) or 'none'})")
    raise InputError(f"{l4t or 'the model'} fits several profiles: {', '.join(t.name for t in candidates)}; "
                     f"give the model string (/proc/device-tree/model) or name the target")


# ------------------------------------------------------------------ summaries for the CLI
def summary_row(t: Target) -> dict:
    """One line of `drsn-edge targets`: the facts that tell profiles apart."""
    hw = t.hardware
    fam = get_family(t.family).summary(t)
    if hw.get("ram_kb"):
        ram = f"{hw['ram_kb']} KB"
    elif hw.get("ram_gb"):
        ram = f"{hw['ram_gb']:g} GB"
    else:
        ram = None
    budget = f"{t.ram_budget_bytes // 1024} KB" if t.ram_budget_bytes is not None else None
    return {"name": t.name, "family": t.family, "backend": t.backend, "chip": fam["chip"], "clock": fam["clock"],
            "flash": fam["flash"], "ram": ram, "ram_budget": budget, "stack": fam["stack"], "transport": t.transport}
