"""The backend contract: what every runtime/compiler offers, what a build folder holds, and the runner
that `check`, `profile`, `monitor` and `benchmark` use to run exactly what `build` produced.

- `Backend`: a small record per runtime (registered in backends/__init__.py) with its `Options`
  dataclass (an option it does not take is refused), `build(ctx) -> BuildOutput` (writes the artifact and
  its sidecar into a staging folder) and `runner(build, device) -> Runner`.
- A build folder holds the artifact, its sidecar `<stem>.json` and `build.json`: the build manifest
  (target, backend, artifact, source model and calibration hashes, evaluation spec, figures). The manifest
  is also the marker that says a folder is a drsn-edge build and may be replaced by the next build.
- `Runner`: activate / infer / timing / deactivate (Polygraphy's split of loaders and runners).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

BUILD_MANIFEST = "build.json"
MANIFEST_KIND = "drsn-edge build"
MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------------------------- runners
@dataclass
class Timing:
    latencies_ms: list[float]
    source: str = "host wall clock"
    counts: list[int] | None = None
    count_unit: str | None = None  # "cycles" | "instructions"


@runtime_checkable
class Runner(Protocol):
    name: str
    last_raw: np.ndarray | None

    def activate(self) -> None: ...

    def infer(self, x: np.ndarray) -> np.ndarray: ...

    def timing(self) -> Timing: ...

    def deactivate(self) -> None: ...


class RunnerBase:
    """Shared runner behaviour: per-window wall-clock timing, context manager, no batch sweep.

    Subclasses implement `_infer_one(x)` for one batch of the artifact's own batch size (returning
    float logits, setting `self._raw` for int8 outputs and `self._guard` for the artifact's domain-guard
    scores) or override `infer`. An artifact with a guard sets `guard_meta` (threshold, taps: guard_export.py);
    after `infer`, `last_guard` holds its scores and `guard_result(x)` its (score, in_domain) per window."""

    guard_meta: dict | None = None

    name = "runner"
    batch = 1
    timing_source = "host wall clock"

    def __init__(self):
        self.last_raw: np.ndarray | None = None
        self._lat: list[float] = []
        self._counts: list[int] | None = None
        self.count_unit: str | None = None
        self._raw = None
        self._guard = None
        self.last_guard: np.ndarray | None = None
        self.active = False

    def activate(self) -> None:
        self.active = True
        self._lat = []

    def deactivate(self) -> None:
        self.active = False

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.deactivate()

    def _infer_one(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        if not self.active:
            self.activate()
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs, raws, guards = [], [], []
        clock = time.perf_counter
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n,) + chunk.shape[1:], np.float32)])
            self._raw = self._guard = None
            t0 = clock()
            y = self._infer_one(chunk)
            self._lat.append((clock() - t0) * 1000.0)
            outs.append(np.asarray(y, np.float32).reshape(self.batch, -1)[:n])
            if self._raw is not None:
                raws.append(np.asarray(self._raw).reshape(self.batch, -1)[:n])
            if self._guard is not None:
                guards.append(np.asarray(self._guard, np.float64).reshape(self.batch)[:n])
        self.last_raw = np.concatenate(raws) if raws else None
        self.last_guard = np.concatenate(guards) if guards else None
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

    def guard_result(self, x: np.ndarray, level: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(score, in_domain) of the windows of the last `infer(x)` from the artifact's own guard (with the raw
        windows' levels when known: guard.window_level); None when the artifact has none."""
        if self.guard_meta is None or self.last_guard is None or len(self.last_guard) != len(x):
            return None
        from ..guard_export import flags

        return self.last_guard, flags(self.last_guard, self.guard_meta, x, level)

    def infer_guard(self, x: np.ndarray, level: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run the artifact on x and return its guard's (score, in_domain) (drsn_edge.guard.guard_scores' hook)."""
        from ..errors import InputError

        self.infer(x)
        res = self.guard_result(x, level)
        if res is None:
            raise InputError(f"{self.name}: this artifact carries no domain guard (its model had none when built)")
        return res

    def timing(self) -> Timing:
        return Timing(list(self._lat), self.timing_source, list(self._counts) if self._counts else None,
                      self.count_unit)

    def sweep(self, x: np.ndarray, runs: int = 20) -> dict[str, float]:
        """Throughput (windows/s) by batch size, where the runner can batch; {} where it cannot."""
        return {}


def warm_up(runner: Runner, x: np.ndarray, n: int = 10) -> None:
    """Run a few windows before timing (caches, lazy allocations, JIT); their timings are dropped."""
    if n > 0 and len(x):
        runner.infer(x[: min(n, len(x))])
        runner.activate()


# ---------------------------------------------------------------------------------------------- options
# the command-line spelling of each backend option, for messages
FLAGS = {"method": "--method", "precision": "--precision", "dla_core": "--dla-core", "workspace_mb": "--workspace-mb",
         "opt_level": "--opt-level", "strongly_typed": "--strongly-typed", "device": "--device",
         "max_drop": "--max-drop", "calib": "--calib"}


@dataclass
class CommonOptions:
    """Options every backend takes."""

    calib: str | None = None
    max_drop: float = 1.0
    max_cell_drop: float = 0.5  # pp at the worst SNR level (mean over noise types)

    def validate(self, target) -> None:
        from ..validate import finite

        finite("--max-drop", self.max_drop, lo=0.0, hi=100.0)
        finite("--max-cell-drop", self.max_cell_drop, lo=0.0, hi=100.0)


def option_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def make_options(backend: "Backend", target, given: dict):
    """The backend's options from what the user gave; an option the backend does not take is refused
    with the backends that do take it."""
    from . import BACKENDS, get_backend

    accepted = option_fields(backend.Options)
    for key, value in given.items():
        if key in accepted:
            continue
        takers = [n for n in BACKENDS if key in option_fields(get_backend(n).Options)]
        names = ", ".join(takers[:-1]) + f" and {takers[-1]}" if len(takers) > 1 else "".join(takers)
        where = f"applies to {names} targets" if takers else "is not a build option"
        raise InputError(f"{FLAGS.get(key, key)} {where}; {target.name} builds with {backend.name}")
    opts = backend.Options(**given)
    opts.validate(target)
    return opts


# ---------------------------------------------------------------------------------------------- building
@dataclass
class BuildContext:
    """What a backend's build step gets: the model, the target, its options, the evaluation spec, the
    staging folder to write into, an opened device (or None) and a progress callback."""

    bundle: Any
    model_path: str
    calibration: Any
    calibration_path: str
    calib_x: np.ndarray
    target: Any
    options: Any
    spec: Any
    out: Path
    out_dir: Path | None = None  # where the staged folder will end up (for messages)
    device: Any = None
    progress: Callable = lambda *a, **k: None
    warnings: list = field(default_factory=list)


@dataclass
class BuildOutput:
    """What a backend's build step reports: the artifact's file name in the build folder, its measured
    accuracy (a Comparison, or None when the backend leaves it to the generic evaluation), memory figures
    and backend-specific details."""

    artifact: str
    accuracy: Any = None
    memory: dict | None = None
    details: dict = field(default_factory=dict)


@dataclass
class BuildResult:
    target: str
    family: str
    backend: str
    precision: str
    out_dir: str
    artifact: str
    sidecar: str
    files: list[str]
    evaluation: dict
    accuracy: dict | None
    memory: dict | None
    details: dict
    warnings: list[str]
    wall_s: float

    def to_json(self) -> dict:
        """Every field, with the backend's details (engine, trtexec, ops, …) at the top level too."""
        d = dataclasses.asdict(self)
        return {**d.pop("details"), **d}


@dataclass
class Backend:
    name: str
    description: str
    Options: type
    build: Callable[[BuildContext], BuildOutput]
    runner: Callable[..., Runner]
    # file name patterns this backend's artifacts use (for `check ARTIFACT`)
    suffixes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- build folders
@dataclass
class Build:
    """A build folder as `build` left it: manifest, artifact and the artifact's sidecar."""

    folder: Path
    manifest: dict
    artifact: Path
    sidecar: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def class_names(self) -> list[str]:
        return list(self.sidecar["class_names"])

    @property
    def fs(self) -> float:
        return float(self.sidecar["fs"])

    @property
    def window(self) -> int:
        return int(self.sidecar["window"])

    @property
    def normalization(self) -> str:
        return (self.sidecar.get("input") or {}).get("normalization", "zscore")

    def file(self, name: str) -> Path:
        return self.folder / name

    def runner(self, device=None) -> Runner:
        from . import get_backend

        return get_backend(self.backend).runner(self, device)


def is_build_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / BUILD_MANIFEST).is_file()


def load_build(path: str | os.PathLike) -> Build:
    """Load a build folder (or the artifact inside one)."""
    from ..fileio import read_json

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not p.exists():
        raise InputError(f"'{p}' does not exist; build it first with drsn-edge build --target <target>")
    man_path = folder / BUILD_MANIFEST
    if not man_path.is_file():
        raise InputError(f"'{folder}' is not a drsn-edge build folder (no {BUILD_MANIFEST}); "
                         "build it with drsn-edge build --target <target>")
    man = read_json(man_path)
    if not isinstance(man, dict) or man.get("kind") != MANIFEST_KIND or not isinstance(man.get("artifact"), str):
        raise InputError(f"'{man_path}' is not a drsn-edge build manifest; rebuild the folder")
    artifact = folder / man["artifact"]
    if p.is_file() and p.resolve() != artifact.resolve() and p.name != BUILD_MANIFEST:
        artifact = p  # another artifact of the same build (e.g. an engine built later on the device)
    if not artifact.is_file():
        raise InputError(f"the build in '{folder}' has lost its artifact '{artifact.name}'; rebuild it")
    side_path = artifact.with_suffix(".json")
    sidecar = read_json(side_path) if side_path.is_file() else {}
    if not isinstance(sidecar, dict):
        raise InputError(f"sidecar '{side_path}' is not a JSON object; rebuild the folder")
    for key in ("class_names", "fs", "window"):
        sidecar.setdefault(key, man.get(key))
    if not sidecar.get("class_names") or not sidecar.get("window"):
        raise InputError(f"the build in '{folder}' does not say its classes and window; rebuild it")
    return Build(folder=folder, manifest=man, artifact=artifact, sidecar=sidecar)
