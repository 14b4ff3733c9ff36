"""Size limits, checked from the inputs before anything is allocated: the bytes a command is about to
hold in memory, the model a bundle header describes, the dimensions of an ONNX graph and the size of
the small files (TOML, JSON) it reads. Each refusal names the figure and the limit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError

TOML_CAP = 1 << 20  # a target profile is a few hundred bytes
JSON_CAP = 64 << 20  # manifests, sidecars, label maps, metadata
MAX_WINDOW = 1 << 20  # points per window
MAX_DIM = 1 << 24  # any one ONNX tensor dimension
MAX_PARAMS = 50_000_000  # the DRSN family is ~11 k parameters; 50 M is far beyond any edge model
MODEL_LIMITS = {"classes": (2, 10_000), "depth": (1, 64), "stages": (1, 8), "base_channels": (1, 4096),
                "in_channels": (1, 64), "kernel": (1, 257)}


def human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000.0
    return f"{nbytes:.1f} PB"


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget() -> int:
    """Bytes one command may allocate: DRSN_EDGE_MAX_MEMORY_MB when set, else half the available memory."""
    env = os.environ.get("DRSN_EDGE_MAX_MEMORY_MB")
    if env:
        try:
            return max(1, int(float(env) * 1e6))
        except ValueError:
            raise InputError(f"DRSN_EDGE_MAX_MEMORY_MB must be a number of megabytes, got {env!r}") from None
    avail = _available_bytes()
    return int(avail * 0.5) if avail else 4 * 10**9


def check_alloc(what: str, nbytes: float, hint: str = "use a smaller value") -> None:
    """Refuse, before allocating, a command that would need more than the memory budget."""
    budget = memory_budget()
    if nbytes > budget:
        raise InputError(f"{what} would need {human(nbytes)} of memory, more than the {human(budget)} allowed "
                         f"(half the available memory, or DRSN_EDGE_MAX_MEMORY_MB); {hint}")


def windows_bytes(n_windows: float, window: int, copies: float = 3.0) -> float:
    """Memory of n float32 windows, counting the working copies (float64 noise, normalization)."""
    return float(n_windows) * float(window) * 4.0 * copies


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """The path of an existing regular file (links followed): never a device, FIFO or folder."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{what} '{p}' does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InputError(f"{what} '{p}' is {kind}; name a regular file")
    return p


def read_capped(path: str | os.PathLike, cap: int, what: str = "file") -> bytes:
    """Read a small file, refusing anything that is not a regular file or is larger than `cap` bytes."""
    p = regular_file(path, what)
    with open(p, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise InputError(f"{what} '{p}' is larger than {human(cap)}; this is not the file drsn-edge expects")
    return data


def check_npz(path: str | os.PathLike, what: str = "dataset") -> None:
    """Refuse an .npz whose arrays, once decompressed, would not fit the memory budget."""
    import zipfile

    p = regular_file(path, what)
    try:
        with zipfile.ZipFile(p) as z:
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # the loader reports an unreadable file in its own words
    check_alloc(f"{what} '{p}' ({human(total)} uncompressed)", total * 2.0, "split the data into smaller files")


def check_model_config(config: dict, n_classes: int, window: int, file_bytes: int | None, where: str) -> None:
    """Refuse a model header whose sizes are absurd, or that promise more weights than the file holds,
    before any layer is created."""
    from .validate import count, finite

    cfg = dict(config)
    cfg.setdefault("classes", n_classes)
    try:
        vals = {k: count(k, cfg[k], *MODEL_LIMITS[k]) for k in MODEL_LIMITS if k in cfg}
        width = finite("width", cfg.get("width", 1.0), 0.0, 64.0, lo_open=True)
        count("window", window, 64, MAX_WINDOW)
    except InputError as exc:
        raise InputError(f"'{where}' has a bad model config: {exc}") from None
    c = max(1, int(round(vals.get("base_channels", 4) * width)))
    k = vals.get("kernel", 3)
    c_in, params = c, vals.get("in_channels", 1) * c * k
    for s in range(vals.get("stages", 3)):
        for _ in range(vals.get("depth", 4)):
            params += k * c_in * (c << s)  # the first convolution of every unit, a lower bound of its weights
            c_in = c << s
    params += c_in * vals["classes"]
    if params > MAX_PARAMS:
        raise InputError(f"'{where}' describes a model of at least {params:,} parameters (limit {MAX_PARAMS:,})")
    if file_bytes is not None and params * 4 > file_bytes:
        raise InputError(f"'{where}' header promises at least {params:,} weights ({human(params * 4)}) but the "
                         f"file holds {human(file_bytes)}; the file is truncated or its header is wrong")


def check_onnx_dims(model, where: str) -> None:
    """Refuse an ONNX graph with a tensor dimension beyond MAX_DIM, or inputs/initializers beyond the budget."""
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        shape = vi.type.tensor_type.shape if vi.type.HasField("tensor_type") else None
        n = 1
        for d in (shape.dim if shape is not None else []):
            if d.HasField("dim_value"):
                if d.dim_value > MAX_DIM or d.dim_value < 0:
                    raise InputError(f"'{where}': tensor '{vi.name}' has a dimension of {d.dim_value:,} "
                                     f"(limit {MAX_DIM:,}); this is not an edge model")
                n *= max(1, d.dim_value)
        check_alloc(f"'{where}': tensor '{vi.name}'", n * 4.0, "export the model with a smaller batch or window")
    for init in g.initializer:
        if any(d > MAX_DIM or d < 0 for d in init.dims):
            raise InputError(f"'{where}': initializer '{init.name}' has dimensions {list(init.dims)} (limit {MAX_DIM:,})")
