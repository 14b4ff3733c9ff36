"""Fake machine trees for the DRSN_EDGE_ROOT test seam, and stubs for the tools only a Jetson has
(trtexec, TensorRT's Python bindings, its dpkg packages, nvidia-smi)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# What each board's files say (release lines and model strings as the boards print them; dpkg versions as
# JetPack's apt repository spells them).
JETSONS = {
    "jetson-nano": {
        "release": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
                   "DATE: Sat Feb 19 17:05:08 UTC 2022",
        "model": "NVIDIA Jetson Nano Developer Kit",
        "compatible": ["nvidia,p3450-0000", "nvidia,jetson-nano", "nvidia,tegra210"],
        "tensorrt": "8.2.1.9-1+cuda10.2", "jetpack": "4.6.1-b110",
        "expect": {"l4t": "32.7.1", "sm": 53, "soc": "tegra210", "tensorrt": "8.2.1.9", "jetpack": "4.6.1"},
    },
    "jetson-xavier-nx": {
        "release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                   "DATE: Tue Aug  1 19:57:35 UTC 2023",
        "model": "NVIDIA Jetson Xavier NX Developer Kit",
        "compatible": ["nvidia,p3509-0000+p3668-0001", "nvidia,jetson-xavier-nx", "nvidia,tegra194"],
        "tensorrt": "8.5.2.2-1+cuda11.4", "jetpack": "5.1.2-b104",
        "expect": {"l4t": "35.4.1", "sm": 72, "soc": "tegra194", "tensorrt": "8.5.2.2", "jetpack": "5.1.2"},
    },
    "jetson-orin-nano": {
        "release": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                   "DATE: Wed Jan  8 01:49:37 UTC 2025",
        "model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
        "compatible": ["nvidia,p3768-0000+p3767-0005-super", "nvidia,p3767-0005", "nvidia,tegra234"],
        "tensorrt": "10.3.0.30-1+cuda12.5", "jetpack": "6.2+b77",
        "expect": {"l4t": "36.4.3", "sm": 87, "soc": "tegra234", "tensorrt": "10.3.0.30", "jetpack": "6.2"},
    },
    "jetson-agx-orin": {
        "release": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
                   "DATE: Fri Sep 13 04:36:44 UTC 2024",
        "model": "Jetson AGX Orin Developer Kit",
        "compatible": ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
        "tensorrt": "10.3.0.30-1+cuda12.5", "jetpack": "6.1+b123",
        "expect": {"l4t": "36.4.0", "sm": 87, "soc": "tegra234", "tensorrt": "10.3.0.30", "jetpack": "6.1"},
    },
    "jetson-thor": {
        "release": "# R38 (release), REVISION: 2.1, GCID: 41844464, BOARD: generic, EABI: aarch64, "
                   "DATE: Tue Sep 16 21:08:02 UTC 2025",
        "model": "NVIDIA Jetson AGX Thor Developer Kit",
        "compatible": ["nvidia,p3971-0080+p3834-0008", "nvidia,p3834-0008", "nvidia,tegra264"],
        "tensorrt": "10.13.3.9-1+cuda13.0", "jetpack": "7.0+b128",
        "expect": {"l4t": "38.2.1", "sm": 110, "soc": "tegra264", "tensorrt": "10.13.3.9", "jetpack": "7.0"},
    },
}


def dpkg_status(packages: dict[str, str], not_installed: dict[str, str] | None = None) -> str:
    """A dpkg status file: installed packages, plus removed ones whose config files remain."""
    paras = []
    for status, pkgs in (("install ok installed", packages), ("deinstall ok config-files", not_installed or {})):
        for name, version in pkgs.items():
            paras.append(f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: libs\n"
                         f"Maintainer: NVIDIA <nobody@example.com>\nArchitecture: arm64\nVersion: {version}\n"
                         f"Description: {name}\n")
    return "\n".join(paras)


def make_root(root: Path, board: str | None, packages: dict[str, str] | None = None, trtexec: bool = False,
              tensorrt: bool = True, jetpack_package: bool = True) -> Path:
    """A fake machine tree. board=None: a workstation (empty tree). `packages` adds dpkg packages;
    `tensorrt` installs the board's TensorRT package; `trtexec` puts a recording stub where JetPack has it."""
    root.mkdir(parents=True, exist_ok=True)
    if board is None:
        return root
    b = JETSONS[board]
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "nv_tegra_release").write_text(b["release"] + "\n")
    dt = root / "proc" / "device-tree"
    dt.mkdir(parents=True, exist_ok=True)
    (dt / "model").write_bytes(b["model"].encode() + b"\x00")
    (dt / "compatible").write_bytes(b"".join(c.encode() + b"\x00" for c in b["compatible"]))
    pkgs = {"nvidia-l4t-core": b["expect"]["l4t"] + "-20250108"}
    if jetpack_package:
        pkgs["nvidia-jetpack"] = b["jetpack"]
    if tensorrt:
        major = b["tensorrt"].split(".")[0]
        pkgs.update({"tensorrt": b["tensorrt"], f"libnvinfer{major}": b["tensorrt"]})
    pkgs.update(packages or {})
    (root / "var" / "lib" / "dpkg").mkdir(parents=True, exist_ok=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text(dpkg_status(pkgs))
    if trtexec:
        write_stub(root / "usr" / "src" / "tensorrt" / "bin" / "trtexec", TRTEXEC_STUB)
    return root


def write_stub(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


# trtexec: records its argv (one per line) in $STUB_LOG/trtexec.argv (else next to itself), writes the
# --saveEngine file; FAKE_TRTEXEC_FAIL=1 makes it fail like a rejected network.
TRTEXEC_STUB = r"""#!/bin/bash
log=${STUB_LOG:-$(dirname "$0")}/trtexec.argv
: > "$log"
for a in "$@"; do printf '%s\n' "$a" >> "$log"; done
if [ "${FAKE_TRTEXEC_FAIL:-0}" = 1 ]; then echo "[E] Error[4]: network rejected" >&2; exit 1; fi
for a in "$@"; do case $a in --saveEngine=*) printf 'fake engine' > "${a#--saveEngine=}" ;; esac; done
echo "&&&& PASSED TensorRT.trtexec"
"""

# dpkg-query: answers `-W ... PATTERN` from FAKE_DPKG ("package=version ..."), in the shape of the format
# build_engine.sh asks for ('${db:Status-Abbrev} ${Package} ${Version}')
DPKG_QUERY_STUB = r"""#!/bin/bash
printf '%s\n' "$*" >> "$STUB_LOG/dpkg-query.argv"
pattern=${!#}
for kv in ${FAKE_DPKG:-}; do
  case ${kv%%=*} in $pattern) echo "ii  ${kv%%=*} ${kv#*=}" ;; esac
done
"""

# python3: `-c 'import tensorrt...'` answers FAKE_PY_TRT or fails like a missing module; `trt_builder.py
# build` records its argv and writes the --engine file; `trt_builder.py info` reports FAKE_PY_SM.
PYTHON3_STUB = r"""#!/bin/bash
printf '%s\n' "$*" >> "$STUB_LOG/python3.argv"
if [ "$1" = -c ]; then
  if [ -n "${FAKE_PY_TRT:-}" ]; then echo "$FAKE_PY_TRT"; exit 0; fi
  echo "ModuleNotFoundError: No module named 'tensorrt'" >&2; exit 1
fi
if [ "$1 $2" = "trt_builder.py build" ]; then
  while [ $# -gt 0 ]; do if [ "$1" = --engine ]; then printf 'fake engine' > "$2"; fi; shift; done
  echo '{"engine": "built"}'; exit 0
fi
if [ "$1 $2" = "trt_builder.py info" ]; then echo "{\"sm\": \"${FAKE_PY_SM:-}\", \"tensorrt\": \"$FAKE_PY_TRT\"}"; exit 0; fi
exit 2
"""

NVIDIA_SMI_STUB = r"""#!/bin/bash
echo "${FAKE_COMPUTE_CAP:-}"
"""

# the POSIX tools build_engine.sh may use: PATH holds only these (and the stubs a test adds)
POSIX_TOOLS = ("bash", "dirname", "sed", "grep", "head", "tail", "awk", "tr", "wc", "sha256sum", "cut", "mv", "rm",
               "cat", "uname")


def tool_dir(path: Path, stubs: dict[str, str]) -> Path:
    """A PATH folder: links to the POSIX tools plus the given stubs (name → script text)."""
    path.mkdir(parents=True, exist_ok=True)
    for tool in POSIX_TOOLS:
        real = shutil.which(tool)
        if real and not (path / tool).exists():
            os.symlink(real, path / tool)
    for name, text in stubs.items():
        write_stub(path / name, text)
    return path


# trtexec for `profile-engine`: records its argv in trtexec.argv next to itself, refuses an engine file
# that says "foreign" the way TensorRT refuses an engine of another version, and writes the layer profile
# (--exportProfile) and the per-iteration times (--exportTimes) in the format trtexec writes them
# (TensorRT 8.6-10: sampleReporting.cpp's exportJSONProfile / exportJSONTrace, default stream precision)
# for the layers listed in layers.json next to itself ([[name, ms per iteration], ...]).
TRTEXEC_PROFILE_STUB = r"""#!/usr/bin/env python3
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "trtexec.argv"), "w") as f:
    f.write("\n".join(sys.argv[1:]) + "\n")
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
with open(opts["loadEngine"], "rb") as f:
    if b"foreign" in f.read():
        print("[E] Error[1]: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization "
              "(Serialization assertion stdVersionRead == serializationVersion failed.Version tag does not match.)")
        print("&&&& FAILED TensorRT.trtexec")
        sys.exit(1)
layers = json.load(open(os.path.join(here, "layers.json")))
count = int(opts.get("iterations", "10"))
total = sum(ms for _, ms in layers) * count
out = ["[", '  { "count" : %d }' % count]
for name, ms in layers:
    out.append(', { "name" : "%s", "timeMs" : %g, "averageMs" : %g, "medianMs" : %g, "percentage" : %g }'
               % (name, ms * count, ms, ms, ms * count / total * 100))
open(opts["exportProfile"], "w").write("\n".join(out + ["]"]) + "\n")
rows, t = [], 0.0
for i in range(count):
    c = sum(ms for _, ms in layers) * (0.9 + 0.2 * (i % 3) / 2)
    rows.append(('{ "startEnqMs" : %g, "endEnqMs" : %g, "startH2dMs" : %g, "endH2dMs" : %g, "startComputeMs" : %g, '
                 '"endComputeMs" : %g, "startD2hMs" : %g, "endD2hMs" : %g, "h2dMs" : %g, "computeMs" : %g, '
                 '"d2hMs" : %g, "latencyMs" : %g }') % (t, t + .01, t + .01, t + .02, t + .02, t + .02 + c,
                                                        t + .02 + c, t + .03 + c, .01, c, .01, c + .02))
    t += c + .05
open(opts["exportTimes"], "w").write("[\n  " + "\n, ".join(rows) + "\n]\n")
print("=== Profile (%d iterations ) ===" % count)
print("&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec " + " ".join(sys.argv[1:]))
"""
