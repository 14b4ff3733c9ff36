"""`--target jetson` without --device: what is this machine?

On a Jetson, its L4T release (/etc/nv_tegra_release), board model and SoC (/proc/device-tree) pick the
profile, and the installed TensorRT (dpkg packages `tensorrt` / `libnvinfer<N>`, `python3 -c 'import
tensorrt'`, trtexec in /usr/src/tensorrt/bin) replaces the profile's pinned versions: the engine is built
here, for what is here. Anywhere else `build` writes a portable package whose build_engine.sh detects the
same facts on the Jetson when it runs.

Test seam: every file is read under a root prefix, `/` unless $DRSN_EDGE_ROOT names another folder. Tests
point it at a fake tree (etc/nv_tegra_release, proc/device-tree/model and compatible, var/lib/dpkg/status,
usr/src/tensorrt/bin/trtexec) to stand in for a Nano, a Xavier, an Orin or a Thor. The generated
build_engine.sh reads the same variable.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import InputError, MissingDependencyError

ENV_ROOT = "DRSN_EDGE_ROOT"
RELEASE_FILE = "etc/nv_tegra_release"
MODEL_FILE = "proc/device-tree/model"
COMPATIBLE_FILE = "proc/device-tree/compatible"
DPKG_STATUS = "var/lib/dpkg/status"
TRTEXEC = "usr/src/tensorrt/bin/trtexec"  # where JetPack installs it (not on PATH)
INSTALL_TENSORRT = "sudo apt install nvidia-jetpack"  # JetPack's meta package: TensorRT, trtexec, bindings
INSTALL_BINDINGS = "sudo apt install python3-libnvinfer"

_NVINFER_RE = re.compile(r"^libnvinfer(\d+)$")


def local_root(root: str | os.PathLike | None = None) -> Path:
    """The root prefix the local machine is read under: `root`, else $DRSN_EDGE_ROOT, else `/`."""
    return Path(root or os.environ.get(ENV_ROOT) or "/")


def _read(path: Path) -> str | None:
    try:
        data = path.read_bytes()[:65536]
    except OSError:
        return None
    return data.replace(b"\x00", b" ").decode("utf-8", "replace").strip() or None


def clean_version(version: str | None) -> str | None:
    """'1:10.3.0.30-1+cuda12.5' → '10.3.0.30', '6.2+b77' → '6.2' (no epoch, no Debian revision)."""
    if not version:
        return None
    v = re.split(r"[-+~\s]", version.strip().split(":", 1)[-1], maxsplit=1)[0]
    return v if re.match(r"^\d+(\.\d+)*$", v) else None


def dpkg_installed(root: Path) -> dict[str, str]:
    """{package: version} of the installed packages in the dpkg status file under `root`."""
    text = _read(root / DPKG_STATUS) or ""
    out = {}
    for para in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", para, re.MULTILINE))
        if fields.get("Status", "").split()[-1:] == ["installed"] and fields.get("Package"):
            out[fields["Package"].split(":")[0]] = fields.get("Version", "")
    return out


def tensorrt_from_dpkg(packages: dict[str, str]) -> tuple[str | None, str | None]:
    """(version, package): the `tensorrt` package, else the newest `libnvinfer<N>`."""
    if clean_version(packages.get("tensorrt")):
        return clean_version(packages["tensorrt"]), "tensorrt"
    nvinfer = sorted((int(m.group(1)), p) for p in packages if (m := _NVINFER_RE.match(p)))
    for _, p in reversed(nvinfer):
        if clean_version(packages[p]):
            return clean_version(packages[p]), p
    return None, None


def python3_tensorrt() -> str | None:
    """The TensorRT version `python3` on PATH imports (JetPack's bindings live in the system Python)."""
    exe = shutil.which("python3")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-c", "import tensorrt; print(tensorrt.__version__)"], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return clean_version(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else None


def find_trtexec(root: Path) -> str | None:
    """trtexec where JetPack puts it (under the root prefix), else on PATH."""
    p = root / TRTEXEC
    if p.is_file() and os.access(p, os.X_OK):
        return str(p)
    return shutil.which("trtexec")


def soc_and_sm(compatible: str | None) -> tuple[str | None, int | None]:
    """The Tegra SoC named in the device tree's compatible list and its GPU's SM."""
    from .targets import TEGRA_SM

    for word in re.findall(r"tegra\d+", (compatible or "").lower()):
        if word in TEGRA_SM:
            return word, TEGRA_SM[word]
    return None, None


def detect_local_jetson(root: str | os.PathLike | None = None) -> dict:
    """What the local machine (under the root prefix, see module doc) is. Plain JSON types."""
    from .targets import JETPACK_OF_L4T, parse_l4t_release

    r = local_root(root)
    release, model = _read(r / RELEASE_FILE), _read(r / MODEL_FILE)
    soc, sm = soc_and_sm(_read(r / COMPATIBLE_FILE))
    facts = {"root": str(r), "is_jetson": bool(release) or "jetson" in (model or "").lower(),
             "nv_tegra_release": release, "model": model, "soc": soc, "sm": sm, "l4t": None, "jetpack": None,
             "tensorrt": None, "tensorrt_from": None, "trtexec": None, "tensorrt_python3": None,
             "tensorrt_here": False}
    if not facts["is_jetson"]:
        return facts
    packages = dpkg_installed(r)
    if release:
        try:
            major, rev = parse_l4t_release(release)
            facts["l4t"] = f"{major}.{rev}"
            facts["jetpack"] = JETPACK_OF_L4T.get(major)
        except InputError:
            pass  # match_jetson names the unreadable release
    facts["jetpack"] = clean_version(packages.get("nvidia-jetpack")) or facts["jetpack"]
    facts["trtexec"] = find_trtexec(r)
    facts["tensorrt_python3"] = python3_tensorrt()
    # this interpreter's own bindings count only on the real machine, never under a fake root
    facts["tensorrt_here"] = r == Path("/") and importlib.util.find_spec("tensorrt") is not None
    version, package = tensorrt_from_dpkg(packages)
    if version:
        facts["tensorrt"], facts["tensorrt_from"] = version, f"dpkg {package}"
    elif facts["tensorrt_python3"]:
        facts["tensorrt"], facts["tensorrt_from"] = facts["tensorrt_python3"], "python3 tensorrt"
    return facts


def _where(facts: dict) -> str:
    bits = [facts.get("model") or "a Jetson"] + ([f"L4T R{facts['l4t']}"] if facts.get("l4t") else [])
    return f"this Jetson ({', '.join(bits)})"


def missing_piece(facts: dict) -> str | None:
    """Why the engine cannot be built on this Jetson (the one thing to install), or None when it can."""
    if (facts["tensorrt"] and (facts["trtexec"] or facts["tensorrt_python3"])) or facts["tensorrt_here"]:
        return None
    trtexec_path = str(Path(facts["root"]) / TRTEXEC)
    if facts["tensorrt"]:
        return (f"TensorRT {facts['tensorrt']} is installed on {_where(facts)} but neither its Python bindings "
                f"(python3 -c 'import tensorrt' fails) nor trtexec ({trtexec_path}) are: install the bindings with "
                f"`{INSTALL_BINDINGS}` and build again")
    if facts["trtexec"]:
        return (f"{_where(facts)} has trtexec ({facts['trtexec']}) but no TensorRT package or Python bindings to "
                f"tell its version: install them with `{INSTALL_TENSORRT}` and build again")
    return (f"{_where(facts)} has no TensorRT (no tensorrt/libnvinfer package, no trtexec, python3 cannot import "
            f"tensorrt): install it with `{INSTALL_TENSORRT}` and build again")


def _summary(profile, facts: dict) -> str:
    have = [f"L4T R{facts['l4t']}" if facts.get("l4t") else None,
            f"JetPack {facts['jetpack']}" if facts.get("jetpack") else None,
            f"SM {facts['sm']}" if facts.get("sm") else None,
            f"TensorRT {facts['tensorrt']} ({facts['tensorrt_from']})" if facts.get("tensorrt") else "no TensorRT"]
    pinned = ""
    if facts.get("tensorrt") and facts["tensorrt"].split(".")[:2] != str(profile.tensorrt).split(".")[:2]:
        pinned = f"; the profile pins TensorRT {profile.tensorrt}, this machine's is used"
    return (f"jetson → {profile.name}: this machine is {facts.get('model') or 'a Jetson'} "
            f"({', '.join(h for h in have if h)}){pinned}")


def portable_target(extra_dirs=None, facts: dict | None = None):
    """The profile of the portable package: any Jetson, its stack detected by build_engine.sh on the device."""
    from .targets import Target, jetson_targets

    facts = dict(facts or detect_local_jetson())
    root = Path(facts["root"])
    facts["summary"] = (f"jetson → portable package: this machine is not a Jetson (no {root / RELEASE_FILE}); "
                        "build_engine.sh detects TensorRT, SM and JetPack on the Jetson when it runs")
    cores = max([t.dla_cores or 0 for t in jetson_targets(extra_dirs)] or [0])
    return Target(name="jetson", family="jetson", backend="tensorrt",
                  description="any Jetson: TensorRT version, SM and JetPack are detected on the device at build time",
                  hardware={"dla_cores": cores}, device={"transport": "ssh"}, check={}, path=None, detected=facts)


def resolve_jetson_target(extra_dirs=None, root: str | os.PathLike | None = None, purpose: str = "build"):
    """`--target jetson` on this machine. A Jetson: its profile, with the TensorRT, SM and JetPack found here
    (for a build, MissingDependencyError when TensorRT cannot build here). Not a Jetson: for a build the
    portable package's profile; for a check an InputError (there is nothing here to check on)."""
    from .targets import match_jetson

    facts = detect_local_jetson(root)
    if not facts["is_jetson"]:
        if purpose == "build":
            return portable_target(extra_dirs, facts)
        raise InputError(f"--target jetson needs a Jetson, and this machine is not one (no "
                         f"{Path(facts['root']) / RELEASE_FILE}): run it on the Jetson, pass --device "
                         f"ssh://user@jetson, or name a profile (drsn-edge targets)")
    profile = match_jetson(facts["nv_tegra_release"] or "", facts["model"], extra_dirs)
    facts["profile"] = profile.name
    facts["summary"] = _summary(profile, facts)
    if purpose == "build":
        missing = missing_piece(facts)
        if missing:
            raise MissingDependencyError(missing)
    hardware = dict(profile.hardware)
    hardware.update({k: facts[k] for k in ("tensorrt", "sm", "jetpack") if facts.get(k)})
    return dataclasses.replace(profile, hardware=hardware, detected=facts)
