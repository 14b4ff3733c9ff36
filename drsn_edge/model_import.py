"""Import a model trained elsewhere into a .drsn bundle.

Recognised sources (the format is detected from the content, not the suffix):

- ONNX: the float deploy-form graph that `drsn-edge export` writes (models/deploy.py). The graph is
  walked node by node and every folded layer is unfolded into the registry model exactly:
  conv1+BN2 → conv1 and an identity BN2 carrying the bias, the depthwise affines → BN1 / the final BN,
  threshold fc1+BN → fc1 and an identity BN carrying the bias. An identity BN has running_mean 0 and
  running_var 1 − eps, so its scale is exactly 1 in float32. Any node or initializer outside that
  pattern is refused by name. The result is checked against ONNX Runtime on a random window.
- PyTorch state dict (torch.save): read only with torch.load(weights_only=True). A raw state dict or
  one under "state_dict" / "model" / "model_state_dict"; "module." (DDP) and "_orig_mod."
  (torch.compile) prefixes are removed.
- TorchScript archive (torch.jit.save, scripted or traced): never given to torch.jit.load, which
  compiles the archive's code. Its data.pkl is read by a restricted unpickler that can only rebuild
  tensors (raw bytes from the archive) and plain attribute holders. Any other global is refused by
  name and never called.

The weights must use the registry's layout (stem, units.N.{bn1,conv1,bn2,conv2,threshold}, bn, fc).
Architecture, depth, width and class count come from the weights. A state dict without threshold
branches fits both resnet and convnet, so it needs `arch`.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckFailedError, InputError

BN_EPS = 1e-5  # BatchNorm1d's default, used by every BN of the registry models
_MAX_RECORD = 1 << 31  # bytes per TorchScript archive record (these models are a few MB at most)
_CONFIG_DEFAULTS = {"stages": 3, "kernel": 3, "in_channels": 1}
_META_JSON_KEYS = ("class_names", "classes", "fs", "window", "normalization", "arch", "config")
_NOT_DEPLOY = ("import recognises only the float deploy-form graph written by `drsn-edge export`; an ONNX exported "
               "from the training-form model or a quantized one is not supported (import the PyTorch state dict "
               "or TorchScript file instead)")


# --------------------------------------------------------------------------------------------------
# public API


def import_model(src, out, *, meta_json=None, classes=None, class_names=None, fs=None, window=None, arch=None,
                 normalization="zscore") -> dict:
    """Turn an ONNX / PyTorch state dict / TorchScript file into a .drsn bundle at `out`.

    Options override `meta_json` (a JSON object with any of class_names, classes, fs, window,
    normalization, arch, config), which overrides the metadata stored in the source (ONNX
    metadata_props written by `drsn-edge export`, or a scripted registry model's arch/config).
    Returns a summary dict.
    """
    from .bundle import make_meta, save_bundle
    from .fileio import sha256_file
    from .models import ARCHITECTURES, count_parameters

    src, out = Path(src), Path(out)
    if out.suffix != ".drsn":
        raise InputError(f"model bundles end in .drsn, got '{out.name}'")
    if not src.is_file():
        raise InputError(f"model file '{src}' does not exist")
    if arch is not None and arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)}")
    mj = _read_meta_json(meta_json)

    fmt = detect_format(src)
    if fmt == "onnx":
        imp = _from_onnx(src)
    elif fmt == "torchscript":
        imp = _from_torchscript(src)
    else:
        imp = _from_torch_save(src)

    embedded = imp["meta"]
    arch_hint = arch or mj.get("arch") or embedded.get("arch")
    config_hint = mj.get("config") or embedded.get("config")
    model = _registry_model(imp["state"], src, fixed_arch=imp.get("arch"), arch_hint=arch_hint,
                            explicit_arch=arch or mj.get("arch"), config_hint=config_hint,
                            residual_hint=imp.get("residual"))
    if imp.get("strides") is not None:
        _check_strides(model, imp["strides"], src)
    n_classes = model.fc.out_features

    names, fs_v, window_v, norm = _resolve_meta(src, embedded, mj, classes=classes, class_names=class_names, fs=fs,
                                                window=window, normalization=normalization, n_classes=n_classes,
                                                graph_window=imp.get("window"))
    check = imp["verify"](model) if imp.get("verify") else None
    sha = sha256_file(src)
    meta = make_meta(model, names, fs_v, window_v, norm,
                     imported_from={"path": str(src.resolve()), "format": fmt, "sha256": sha})
    save_bundle(model, meta, out)
    summary = {"out": str(out), "arch": model.arch, "config": dict(model.config), "classes": n_classes,
               "class_names": names, "fs": fs_v, "window": window_v, "source": str(src), "source_format": fmt,
               "source_sha256": sha, "params": count_parameters(model)}
    if check is not None:
        summary["verification"] = check
    return summary


def detect_format(path) -> str:
    """'onnx', 'torchscript' or 'state_dict', from the file's content."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise InputError(f"'{path}' is empty; expected an ONNX, PyTorch state dict or TorchScript file")
    if head.startswith(b"PK"):
        root, kind = _zip_root(path)
        return kind
    if head[:1] == b"\x80" or path.suffix in (".pt", ".pth"):
        return "state_dict"  # legacy (non-zip) torch.save pickle: torch.load(weights_only=True) judges it
    return "onnx"


# --------------------------------------------------------------------------------------------------
# metadata


def _read_meta_json(path) -> dict:
    if path is None:
        return {}
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"metadata file '{p}' does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"metadata file '{p}' is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"metadata file '{p}' must hold a JSON object with any of {', '.join(_META_JSON_KEYS)}")
    bad = [k for k in obj if k not in _META_JSON_KEYS]
    if bad:
        raise InputError(f"metadata file '{p}' has unknown key '{bad[0]}'; known: {', '.join(_META_JSON_KEYS)}")
    if "config" in obj and not isinstance(obj["config"], dict):
        raise InputError(f"metadata file '{p}': config must be an object")
    if "arch" in obj:
        from .models import ARCHITECTURES

        if obj["arch"] not in ARCHITECTURES:
            raise InputError(f"metadata file '{p}' names unknown architecture {obj['arch']!r}; "
                             f"choose one of {', '.join(ARCHITECTURES)}")
    return obj


def _resolve_meta(src, embedded, mj, *, classes, class_names, fs, window, normalization, n_classes, graph_window):
    def pick(key, explicit):
        if explicit is not None:
            return explicit
        if key in mj:
            return mj[key]
        return embedded.get(key)

    names = pick("class_names", class_names)
    count = classes if classes is not None else mj.get("classes")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise InputError(f"classes must be a whole number ≥ 2, got {count!r}")
        if names is None:
            names = [f"class{i}" for i in range(count)]
        elif len(names) != count:
            raise InputError(f"classes={count} but {len(names)} class names were given; pass one or the other")
    fs_v = pick("fs", fs)
    window_v = pick("window", window)
    if window_v is None:
        window_v = graph_window
    missing = [opt for opt, v in (("fs", fs_v), ("window", window_v), ("class_names", names)) if v is None]
    if missing:
        hint = {"fs": "fs (sample rate in Hz)", "window": "window (points per window)",
                "class_names": "class_names (or classes=N for class0..classN-1)"}
        raise InputError(f"'{src}' does not record {', '.join(missing)}; pass "
                         f"{', '.join(hint[m] for m in missing)}, or a meta_json file with them")
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputError(f"class_names must be a list of strings, got {names!r}")
    names = list(names)
    if len(names) != n_classes:
        raise InputError(f"the model has {n_classes} outputs but {len(names)} class names were given; "
                         f"pass {n_classes} class names")
    if len(set(names)) != len(names) or len(names) < 2:
        raise InputError("class names must be distinct (at least two)")
    try:
        fs_v = float(fs_v)
    except (TypeError, ValueError):
        raise InputError(f"fs must be a sample rate in Hz, got {fs_v!r}") from None
    if not math.isfinite(fs_v) or fs_v <= 0:
        raise InputError(f"fs must be a positive sample rate in Hz, got {fs_v!r}")
    if isinstance(window_v, float) and window_v.is_integer():
        window_v = int(window_v)
    if isinstance(window_v, bool) or not isinstance(window_v, int) or window_v < 64:
        raise InputError(f"window must be a whole number of points ≥ 64, got {window_v!r}")
    if graph_window is not None and window_v != graph_window:
        raise InputError(f"window {window_v} disagrees with the ONNX input length {graph_window}; "
                         f"pass window={graph_window} or omit it")
    norm = normalization
    if normalization == "zscore":  # the default: let the file's metadata speak
        norm = mj.get("normalization") or embedded.get("normalization") or normalization
    if norm != "zscore":
        raise InputError(f"unknown normalization {norm!r}; drsn-edge models use 'zscore'")
    return names, fs_v, window_v, norm


# --------------------------------------------------------------------------------------------------
# registry state dict → model

_KEY_RE = re.compile(
    r"^(?:stem\.weight"
    r"|units\.\d+\.(?:bn1|bn2|threshold\.bn)\.(?:weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|units\.\d+\.(?:conv1|conv2)\.weight"
    r"|units\.\d+\.threshold\.(?:fc1|fc2)\.(?:weight|bias)"
    r"|bn\.(?:weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|fc\.(?:weight|bias))$")
_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(state: dict) -> dict:
    changed = True
    while changed and state:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


def _shape(state, key, src):
    if key not in state:
        raise InputError(f"'{src}' lacks weight '{key}' of the registry layout")
    return tuple(state[key].shape)


def _infer_config(state: dict, src) -> tuple[dict, str | None]:
    """(config, shrink) from the registry key layout; shrink is 'cw', 'cs' or None."""
    stem = _shape(state, "stem.weight", src)
    if len(stem) != 3:
        raise InputError(f"'{src}': stem.weight has shape {list(stem)}, expected [channels, in_channels, kernel]")
    c, in_ch, k = stem
    idx = sorted({int(m.group(1)) for key in state if (m := re.match(r"^units\.(\d+)\.", key))})
    if not idx:
        raise InputError(f"'{src}' has no residual units (units.N.*)")
    if idx != list(range(len(idx))):
        gap = next(i for i in range(len(idx) + 1) if i not in idx)
        raise InputError(f"'{src}' lacks weights of unit {gap} (units.{gap}.*)")
    couts, shrinks = [], []
    for i in idx:
        w = _shape(state, f"units.{i}.conv1.weight", src)
        if len(w) != 3:
            raise InputError(f"'{src}': units.{i}.conv1.weight has shape {list(w)}, expected 3 dims")
        couts.append(w[0])
        if f"units.{i}.threshold.fc2.weight" in state:
            f2 = _shape(state, f"units.{i}.threshold.fc2.weight", src)
            shrinks.append("cs" if f2[0] == 1 and w[0] != 1 else "cw")
        else:
            shrinks.append(None)
    if len(set(shrinks)) > 1:
        first = shrinks.index(None) if None in shrinks else shrinks.index("cs")
        raise InputError(f"'{src}': unit {first} differs from unit 0 in its threshold branch; "
                         "the registry models use one kind of unit throughout")
    depth = sum(1 for co in couts if co == c)
    if depth == 0 or len(couts) % depth:
        raise InputError(f"'{src}': unit channels {couts} do not follow the registry skeleton (stem has {c})")
    stages = len(couts) // depth
    expected = [c * 2 ** s for s in range(stages) for _ in range(depth)]
    if couts != expected:
        raise InputError(f"'{src}': unit channels {couts} do not follow the registry skeleton "
                         f"(expected {expected}: {stages} stages of {depth} doubling from {c})")
    fc = _shape(state, "fc.weight", src)
    if len(fc) != 2:
        raise InputError(f"'{src}': fc.weight has shape {list(fc)}, expected [classes, features]")
    width = c / 4  # base_channels 4: round(4 · width) == c exactly
    config = {"classes": int(fc[0]), "width": int(width) if width.is_integer() else width, "depth": depth}
    for key, value in (("stages", stages), ("kernel", k), ("in_channels", in_ch)):
        if value != _CONFIG_DEFAULTS[key]:
            config[key] = int(value)
    return config, shrinks[0]


def _registry_model(state: dict, src, *, fixed_arch=None, arch_hint=None, explicit_arch=None, config_hint=None,
                    residual_hint=None):
    """Build the registry model that `state` (registry layout) belongs to, loaded with strict=True."""
    import torch

    from .models import CONFIG_KEYS, create_model

    state = _strip_prefixes(dict(state))
    for k, v in state.items():
        if not isinstance(k, str):
            raise InputError(f"'{src}' has a non-text weight name {k!r}")
        if not _KEY_RE.match(k):
            raise InputError(f"'{src}' has weight '{k}' that the registry models do not use; "
                             "only drsn-cw / drsn-cs / resnet / convnet state dicts can be imported")
        if not isinstance(v, torch.Tensor):
            raise InputError(f"'{src}': '{k}' is not a tensor ({type(v).__name__})")
    config, shrink = _infer_config(state, src)

    if shrink is not None:
        arch = f"drsn-{shrink}"
        if explicit_arch and explicit_arch != arch:
            raise InputError(f"'{src}' holds a {arch} model (its threshold branches say so) but arch={explicit_arch} "
                             "was given; drop the arch option")
    elif fixed_arch:
        arch = fixed_arch
    else:
        if arch_hint in ("resnet", "convnet"):
            arch = arch_hint
        elif residual_hint is not None:
            arch = "resnet" if residual_hint else "convnet"
        else:
            raise InputError(f"'{src}' has no threshold branches, so it fits both resnet and convnet "
                             "(the weights are the same); pass arch='resnet' or arch='convnet'")
    if fixed_arch and fixed_arch != arch:
        raise InputError(f"'{src}': graph structure says {fixed_arch} but the weights say {arch}")
    if explicit_arch and explicit_arch != arch:
        raise InputError(f"'{src}' holds a {arch} model but arch={explicit_arch} was given; drop the arch option")

    model = create_model(arch, **config)
    target = model.state_dict()
    # keep the stored config (e.g. base_channels) when it describes these very weights
    if isinstance(config_hint, dict) and config_hint and set(config_hint) <= set(CONFIG_KEYS):
        try:
            alt = create_model(arch, **config_hint)
        except InputError:
            alt = None
        if alt is not None:
            alt_state = alt.state_dict()
            if list(alt_state) == list(target) and all(tuple(alt_state[k].shape) == tuple(v.shape)
                                                          for k, v in target.items()):
                model, target = alt, alt_state

    unexpected = [k for k in state if k not in target]
    if unexpected:
        raise InputError(f"'{src}' has weight '{unexpected[0]}' that {arch} does not use")
    full = {}
    for k, ref in target.items():
        if k not in state:
            if k.endswith("num_batches_tracked"):
                full[k] = torch.zeros_like(ref)
                continue
            raise InputError(f"'{src}' lacks weight '{k}' of {arch}")
        v = state[k].detach()
        if tuple(v.shape) != tuple(ref.shape):
            raise InputError(f"'{src}': weight '{k}' has shape {list(v.shape)}, {arch} expects {list(ref.shape)}")
        if ref.is_floating_point():
            if not v.is_floating_point():
                raise InputError(f"'{src}': weight '{k}' has dtype {v.dtype}, expected floating point")
            v = v.to(torch.float32)
            if not torch.isfinite(v).all():
                raise InputError(f"'{src}' has non-finite values in weight '{k}'")
        else:
            v = v.to(ref.dtype)
        full[k] = v.contiguous().clone()
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:  # shapes and keys were checked above; keep the message one line anyway
        raise InputError(f"'{src}': weights do not load into {arch}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def _check_strides(model, strides, src) -> None:
    expected = [u.stride for u in model.units]
    for i, (got, want) in enumerate(zip(strides, expected)):
        if got != want:
            raise InputError(f"'{src}': unit {i} has stride {got} where the registry skeleton has {want}; "
                             f"{_NOT_DEPLOY}")


# --------------------------------------------------------------------------------------------------
# zip archives (torch.save / TorchScript)


def _zip_root(path) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"'{path}' is a damaged zip archive ({exc}); re-save the model") from None
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise InputError(f"'{path}' is a zip archive but not a PyTorch file (no single <root>/data.pkl); "
                         "expected a torch.save state dict or a TorchScript archive")
    root = roots[0]
    script = any(n.startswith(root + "/code/") for n in names) or (root + "/constants.pkl") in names
    return root, "torchscript" if script else "state_dict"


def _from_torch_save(src) -> dict:
    import torch

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the safe loader is bad input
        text = str(exc)
        g = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if g:
            why = f"it refers to {g.group(1)}, which plain weights never do"
        else:
            m = re.search(r"Unsupported operand[^\n]*", text)
            why = m.group(0) if m else (text.strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"'{src}' could not be read as a PyTorch weights file (torch.load weights_only=True "
                         f"refused it: {why[:200]}); save the model's state_dict() instead") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not state:
        raise InputError(f"'{src}' holds a {type(obj).__name__}, not a state dict; save model.state_dict() "
                         "(or a dict with it under 'state_dict')")
    return {"state": state, "meta": {}}


class _Refused(Exception):
    pass


class _ScriptObject:
    """Stands in for a TorchScript module or object: it only stores the pickled attributes."""

    def __init__(self, *args, **kwargs):
        self._state = None

    def __setstate__(self, state):
        object.__setattr__(self, "_state", state)


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _storage_types():
    import torch

    return {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
            "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
            "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
            "BoolStorage": torch.bool}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    import torch

    if not isinstance(storage, torch.Tensor):
        raise _Refused("tensor without storage")
    ints = (storage_offset, *tuple(size), *tuple(stride))
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ints) or len(size) != len(stride):
        raise _Refused("malformed tensor record")
    if math.prod(size) > max(storage.numel(), 1):  # parameters never overlap in memory; refuse blow-ups
        raise _Refused("tensor record larger than its storage")
    if all(s > 0 for s in size):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= storage.numel():
            raise _Refused("tensor record points outside its storage")
    elif storage_offset > storage.numel():
        raise _Refused("tensor record points outside its storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), storage_offset).clone()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _passthrough(value, *args):
    return value


class _TorchScriptUnpickler(pickle.Unpickler):
    """Rebuilds tensors and attribute holders only; every other global is refused, never called."""

    _FUNCS = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch.jit._pickle", "restore_type_tag"): _passthrough,
        ("torch.jit._pickle", "build_intlist"): _passthrough,
        ("torch.jit._pickle", "build_doublelist"): _passthrough,
        ("torch.jit._pickle", "build_boollist"): _passthrough,
        ("torch.jit._pickle", "build_tensorlist"): _passthrough,
    }

    def __init__(self, data: bytes, zf: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self._zf, self._root, self._storages = zf, root, {}
        self._names = set(zf.namelist())

    def find_class(self, module, name):
        fn = self._FUNCS.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name in _storage_types():
            return _StorageType(_storage_types()[name])
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise _Refused(f"persistent id {str(pid)[:80]}")
        dtype, key, numel = pid[1].dtype, pid[2], pid[4]
        if key in self._storages:
            return self._storages[key]
        name = f"{self._root}/data/{key}"
        if name not in self._names:
            raise _Refused(f"missing storage record {name}")
        if self._zf.getinfo(name).file_size > _MAX_RECORD:
            raise _Refused(f"oversized storage record {name}")
        raw = self._zf.read(name)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise _Refused(f"truncated storage record {name}")
        t = (torch.frombuffer(bytearray(raw[: numel * itemsize]), dtype=dtype) if numel
             else torch.empty(0, dtype=dtype))
        self._storages[key] = t
        return t


def _collect_tensors(obj, prefix, out, depth=0):
    import torch

    if depth > 64:
        raise _Refused("attribute nesting deeper than 64")
    state = obj._state
    if not isinstance(state, dict):
        return
    for k, v in state.items():
        if not isinstance(k, str):
            continue
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v
        elif isinstance(v, _ScriptObject):
            _collect_tensors(v, f"{prefix}{k}.", out, depth + 1)


def _from_torchscript(src) -> dict:
    root, _ = _zip_root(src)
    try:
        with zipfile.ZipFile(src) as zf:
            bo = f"{root}/byteorder"
            if bo in zf.namelist() and zf.read(bo).strip() not in (b"little", b""):
                raise InputError(f"'{src}' stores big-endian tensors; re-save it on a little-endian machine")
            if zf.getinfo(f"{root}/data.pkl").file_size > _MAX_RECORD:
                raise _Refused("an oversized data.pkl")
            data = zf.read(f"{root}/data.pkl")
            obj = _TorchScriptUnpickler(data, zf, root).load()
            if not isinstance(obj, _ScriptObject):
                raise _Refused("the archive's root object is not a module")
            state: dict = {}
            _collect_tensors(obj, "", state)
    except InputError:
        raise
    except _Refused as exc:
        raise InputError(f"'{src}': TorchScript archive refers to {exc}, which import does not run or accept "
                         "(only module attributes and tensors are read)") from None
    except Exception as exc:  # noqa: BLE001 - malformed pickle / zip: bad input
        raise InputError(f"'{src}' is a damaged TorchScript archive ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0][:200]})") from None
    if not state:
        raise InputError(f"'{src}' is a TorchScript archive without weights")
    meta = {}
    attrs = obj._state if isinstance(obj._state, dict) else {}
    from .models import ARCHITECTURES

    if isinstance(attrs.get("arch"), str) and attrs["arch"] in ARCHITECTURES:
        meta["arch"] = attrs["arch"]
    if isinstance(attrs.get("config"), dict):
        meta["config"] = dict(attrs["config"])
    residual = None
    units = attrs.get("units")
    if isinstance(units, _ScriptObject) and isinstance(units._state, dict):
        flags = {u._state.get("residual") for u in units._state.values()
                 if isinstance(u, _ScriptObject) and isinstance(u._state, dict)}
        if len(flags) == 1 and isinstance(next(iter(flags)), bool):
            residual = next(iter(flags))
    return {"state": state, "meta": meta, "residual": residual}


# --------------------------------------------------------------------------------------------------
# ONNX deploy form


def _label(node) -> str:
    return f"'{node.name}' ({node.op_type})" if node.name else f"{node.op_type} node producing '{node.output[0]}'"


class _DeployGraph:
    """Walks the deploy-form graph; every node and initializer it accepts is marked as used."""

    def __init__(self, model, src):
        from onnx import external_data_helper, helper, numpy_helper

        self.src, self.g, self.helper = src, model.graph, helper
        self.init, self.alias, self.const = {}, {}, {}
        self.used_init, self.visited = set(), set()
        for t in self.g.initializer:
            if external_data_helper.uses_external_data(t):
                raise InputError(f"'{src}' keeps initializer '{t.name}' in an external data file; "
                                 "save the ONNX with all weights inside it")
            self.init[t.name] = t
        self.nodes = list(self.g.node)
        self.producer, self.consumers = {}, collections.defaultdict(list)
        for i, n in enumerate(self.nodes):
            for o in n.output:
                self.producer[o] = i
            for x in n.input:
                if x:
                    self.consumers[x].append(i)
        for i, n in enumerate(self.nodes):
            if n.op_type == "Constant" and len(n.output) == 1:
                self.const[n.output[0]] = i
            elif n.op_type == "Identity" and len(n.input) == 1 and self._is_const(n.input[0]):
                self.alias[n.output[0]] = (n.input[0], i)
        self.numpy_helper = numpy_helper

    # ---- constants
    def _is_const(self, name):
        return name in self.init or name in self.const or name in self.alias

    def const_value(self, name, what, node=None) -> np.ndarray:
        seen = 0
        while name in self.alias:
            base, i = self.alias[name]
            self.visited.add(i)
            name = base
            seen += 1
            if seen > len(self.nodes):
                break
        if name in self.init:
            self.used_init.add(name)
            arr = self.numpy_helper.to_array(self.init[name])
        elif name in self.const:
            i = self.const[name]
            self.visited.add(i)
            attrs = self.attrs(self.nodes[i])
            if "value" not in attrs:
                raise InputError(f"'{self.src}': unsupported ONNX node {_label(self.nodes[i])}; {_NOT_DEPLOY}")
            arr = self.numpy_helper.to_array(attrs["value"])
        else:
            where = f" of {_label(node)}" if node is not None else ""
            raise InputError(f"'{self.src}': {what}{where} is computed, not a stored constant; {_NOT_DEPLOY}")
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
            if not np.isfinite(arr).all():
                raise InputError(f"'{self.src}' has non-finite values in initializer '{name}'")
        return arr

    def attrs(self, node) -> dict:
        out = {}
        for a in node.attribute:
            v = self.helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    # ---- walking
    def fail(self, tensor, expected):
        cons = [self.nodes[i] for i in self.consumers.get(tensor, []) if i not in self.visited]
        if cons:
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(cons[0])} where {expected} was expected; "
                             f"{_NOT_DEPLOY}")
        raise InputError(f"'{self.src}': tensor '{tensor}' is not followed by {expected}; {_NOT_DEPLOY}")

    def take(self, tensor, op, expected, inputs=None, pred=None):
        """The one unvisited consumer of `tensor` with `op` (and exactly `inputs` / passing `pred`)."""
        found = []
        for i in self.consumers.get(tensor, []):
            n = self.nodes[i]
            if i in self.visited or n.op_type != op or i in found:
                continue
            if inputs is not None and list(n.input) != list(inputs):
                continue
            if pred is not None and not pred(n):
                continue
            found.append(i)
        if len(found) != 1:
            if len(found) > 1:
                raise InputError(f"'{self.src}': unsupported ONNX node {_label(self.nodes[found[1]])}: a second "
                                 f"{expected}; {_NOT_DEPLOY}")
            self.fail(tensor, expected)
        i = found[0]
        n = self.nodes[i]
        if len(n.output) != 1:
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(n)} (extra outputs); {_NOT_DEPLOY}")
        self.visited.add(i)
        return n

    def axes(self, node, default=None) -> list[int]:
        a = self.attrs(node)
        if "axes" in a:
            return list(a["axes"])
        if len(node.input) > 1 and node.input[1]:
            return [int(v) for v in np.asarray(self.const_value(node.input[1], "axes", node)).ravel()]
        if default is not None:
            return default
        raise InputError(f"'{self.src}': {_label(node)} has no axes; {_NOT_DEPLOY}")

    def reduce_mean(self, node, axes, keepdims):
        got = sorted(a % 4 for a in self.axes(node))
        a = self.attrs(node)
        if got != sorted(axes) or int(a.get("keepdims", 1)) != keepdims or int(a.get("noop_with_empty_axes", 0)):
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(node)} (averages over axes {got}, "
                             f"expected {sorted(axes)}); {_NOT_DEPLOY}")

    def conv(self, node, data, *, depthwise=False, kernel=None, point=False):
        """(W [O, I, 1, k], bias or None, stride) of a deploy-form 2-D conv, all attributes checked."""
        if node.input[0] != data or len(node.input) < 2:
            self.fail(data, "a convolution")
        w = self.const_value(node.input[1], "the weight", node)
        b = self.const_value(node.input[2], "the bias", node) if len(node.input) > 2 and node.input[2] else None
        a = self.attrs(node)

        def bad(why):
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(node)} ({why}); {_NOT_DEPLOY}")

        if w.ndim != 4 or w.shape[2] != 1 or w.dtype != np.float32:
            bad(f"weight shape {list(w.shape)}")
        if b is not None and (b.shape != (w.shape[0],) or b.dtype != np.float32):
            bad(f"bias shape {list(b.shape)}")
        if a.get("auto_pad", "NOTSET") != "NOTSET":
            bad("auto_pad")
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            bad("dilation")
        k = w.shape[3]
        if list(a.get("kernel_shape", [1, k])) != [1, k]:
            bad("kernel_shape")
        strides = list(a.get("strides", [1, 1]))
        pad = 0 if point else k // 2
        if list(a.get("pads", [0, 0, 0, 0])) != [0, pad, 0, pad] or strides[0] != 1 or strides[1] not in (1, 2):
            bad(f"pads {list(a.get('pads', []))} / strides {strides}")
        group = int(a.get("group", 1))
        if depthwise:
            if w.shape[1:] != (1, 1, 1) or group != w.shape[0] or b is None or strides != [1, 1]:
                bad("not a per-channel affine")
        else:
            if group != 1:
                bad(f"group {group}")
            if point and (k != 1 or strides != [1, 1]):
                bad("not a 1×1 convolution")
            if kernel is not None and k != kernel:
                bad(f"kernel {k}, the stem has {kernel}")
        return w, b, strides[1]

    def out(self, node):
        return node.output[0]

    def is_depthwise(self, node, channels):
        if node.op_type != "Conv" or len(node.input) < 3 or not self._is_const(node.input[1]):
            return False
        a = self.attrs(node)
        shape = self._const_shape(node.input[1])
        return shape is not None and tuple(shape) == (channels, 1, 1, 1) and int(a.get("group", 1)) == channels

    def _const_shape(self, name):
        while name in self.alias:
            name = self.alias[name][0]
        if name in self.init:
            return tuple(self.init[name].dims)
        return None


def _from_onnx(src) -> dict:
    from .deps import onnx as _onnx

    onnx = _onnx()
    raw = Path(src).read_bytes()
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise InputError(f"'{src}' is neither an ONNX model nor a PyTorch/TorchScript file "
                         f"({type(exc).__name__}); check the file") from None
    g = model.graph
    if not len(g.node) or not len(g.output):
        raise InputError(f"'{src}' is not a usable ONNX model (empty graph); check the file")
    meta = _onnx_meta(model, src)
    w = _DeployGraph(model, src)

    inputs = [i for i in g.input if i.name not in w.init]
    if len(inputs) != 1 or len(g.output) != 1:
        raise InputError(f"'{src}' has {len(inputs)} inputs and {len(g.output)} outputs; the deploy form has one "
                         f"of each; {_NOT_DEPLOY}")
    x = inputs[0].name
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    graph_window = dims[2] if len(dims) == 3 and dims[2] else None

    unsq = w.take(x, "Unsqueeze", "Unsqueeze (the 2-D view of the input)")
    if [a % 4 for a in w.axes(unsq)] != [2]:
        raise InputError(f"'{src}': unsupported ONNX node {_label(unsq)} (axes); {_NOT_DEPLOY}")
    stem = w.take(w.out(unsq), "Conv", "the stem convolution")
    sw, sb, ss = w.conv(stem, w.out(unsq))
    if ss != 2 or (sb is not None and np.any(sb != 0)):
        raise InputError(f"'{src}': unsupported ONNX node {_label(stem)} (the stem has stride 2 and no bias); "
                         f"{_NOT_DEPLOY}")
    kernel = sw.shape[3]
    state = {"stem.weight": sw[:, :, 0, :]}
    h, ch = w.out(stem), sw.shape[0]
    strides, shrinks, residuals = [], [], []
    i = 0
    while True:
        dw = w.take(h, "Conv", f"a per-channel affine on {ch} channels (BN)",
                    pred=lambda n, c=ch, t=h: n.input[0] == t and w.is_depthwise(n, c))
        s, b, _ = w.conv(dw, h, depthwise=True)
        relu = w.take(w.out(dw), "Relu", "Relu")
        nxt = [w.nodes[j] for j in w.consumers.get(w.out(relu), []) if j not in w.visited]
        if len(nxt) == 1 and nxt[0].op_type == "ReduceMean":
            _put_bn(state, "bn", s[:, 0, 0, 0], b)
            break
        conv1 = w.take(w.out(relu), "Conv", "conv1 (with BN2 folded)")
        w1, b1, st = w.conv(conv1, w.out(relu), kernel=kernel)
        if w1.shape[1] != ch:
            raise InputError(f"'{src}': unsupported ONNX node {_label(conv1)} (input channels); {_NOT_DEPLOY}")
        co = w1.shape[0]
        r1 = w.take(w.out(conv1), "Relu", "Relu")
        conv2 = w.take(w.out(r1), "Conv", "conv2")
        w2, b2, st2 = w.conv(conv2, w.out(r1), kernel=kernel)
        if st2 != 1 or w2.shape[:2] != (co, co) or (b2 is not None and np.any(b2 != 0)):
            raise InputError(f"'{src}': unsupported ONNX node {_label(conv2)} (conv2 has stride 1, {co}→{co} "
                             f"channels and no bias); {_NOT_DEPLOY}")
        p = f"units.{i}"
        _put_bn(state, f"{p}.bn1", s[:, 0, 0, 0], b)
        state[f"{p}.conv1.weight"] = w1[:, :, 0, :]
        _put_bn(state, f"{p}.bn2", np.ones(co, np.float32), b1 if b1 is not None else np.zeros(co, np.float32))
        state[f"{p}.conv2.weight"] = w2[:, :, 0, :]
        r = w.out(conv2)
        if any(w.nodes[j].op_type == "Neg" for j in w.consumers.get(r, []) if j not in w.visited):
            r, shrink = _shrink(w, r, co, state, p)
        else:
            shrink = None
        # residual shortcut: Add(branch, [Concat(] [AveragePool(] h [)] [, zeros)])
        adds = [w.nodes[j] for j in w.consumers.get(r, []) if j not in w.visited and w.nodes[j].op_type == "Add"]
        if adds:
            add = w.take(r, "Add", "the residual Add")
            if len(add.input) != 2:
                w.fail(r, "the residual Add")
            other = add.input[1] if add.input[0] == r else add.input[0]
            _shortcut(w, other, h, st, ch, co, add)
            residuals.append(True)
            h = w.out(add)
        else:
            residuals.append(False)
            h = r
        strides.append(st)
        shrinks.append(shrink)
        ch, i = co, i + 1
    if i == 0:
        raise InputError(f"'{src}' has no residual units; {_NOT_DEPLOY}")
    rm = w.take(w.out(relu), "ReduceMean", "global average pooling")
    w.reduce_mean(rm, [2, 3], 0)
    gemm = w.take(w.out(rm), "Gemm", "the classifier (Gemm)")
    if gemm.input[0] != w.out(rm) or len(gemm.input) != 3:
        w.fail(w.out(rm), "the classifier (Gemm with bias)")
    a = w.attrs(gemm)
    fw = w.const_value(gemm.input[1], "the classifier weight", gemm)
    fb = w.const_value(gemm.input[2], "the classifier bias", gemm)
    if int(a.get("transB", 0)) == 0:
        fw = fw.T
    if (float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0))
            or fw.ndim != 2 or fw.shape[1] != ch or fb.shape != (fw.shape[0],)):
        raise InputError(f"'{src}': unsupported ONNX node {_label(gemm)} (classifier); {_NOT_DEPLOY}")
    if w.out(gemm) != g.output[0].name:
        w.fail(w.out(gemm), "the graph output")
    state["fc.weight"], state["fc.bias"] = np.ascontiguousarray(fw), fb

    for j, n in enumerate(w.nodes):
        if j not in w.visited:
            raise InputError(f"'{src}': unsupported ONNX node {_label(n)}; {_NOT_DEPLOY}")
    for t in g.initializer:
        if t.name not in w.used_init:
            raise InputError(f"'{src}': initializer '{t.name}' is not used by the deploy form; {_NOT_DEPLOY}")
    if len(set(shrinks)) != 1 or len(set(residuals)) != 1:
        raise InputError(f"'{src}' mixes unit kinds (threshold / residual); the registry models use one kind "
                         f"throughout; {_NOT_DEPLOY}")
    shrink, residual = shrinks[0], residuals[0]
    if shrink and not residual:
        raise InputError(f"'{src}' has threshold units without shortcuts, which no registry model has")
    arch = f"drsn-{shrink}" if shrink else ("resnet" if residual else "convnet")

    import torch

    tensors = {k: torch.from_numpy(np.array(v, copy=True, order="C")) for k, v in state.items()}
    batch = dims[0] if dims and dims[0] else 1

    def verify(model):
        return _verify_onnx(raw, model, batch, dims[1] if len(dims) == 3 and dims[1] else 1, graph_window, src)

    return {"state": tensors, "meta": meta, "arch": arch, "window": graph_window, "strides": strides,
            "verify": verify if graph_window else None}


def _put_bn(state, prefix, scale, shift):
    """A BatchNorm1d whose eval output is exactly scale·x + shift (running_var + eps == 1 in float32)."""
    n = scale.shape[0]
    state[f"{prefix}.weight"] = np.asarray(scale, np.float32)
    state[f"{prefix}.bias"] = np.asarray(shift, np.float32)
    state[f"{prefix}.running_mean"] = np.zeros(n, np.float32)
    state[f"{prefix}.running_var"] = np.full(n, np.float32(1.0) - np.float32(BN_EPS), np.float32)
    state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)


def _shrink(w, r, co, state, p):
    """Parse the soft-threshold block after conv2 output `r`; returns (output tensor, 'cw' | 'cs')."""
    src = w.src
    neg = w.take(r, "Neg", "Neg (−x)")
    nx = w.out(neg)
    mx = w.take(r, "Max", "Max(x, −x)", pred=lambda n: sorted(n.input) == sorted([r, nx]) and len(n.input) == 2)
    gap = w.take(w.out(mx), "ReduceMean", "mean |x|")
    w.reduce_mean(gap, [3], 1)
    g = w.out(gap)
    fc1 = w.take(g, "Conv", "threshold fc1 (with its BN folded)", pred=lambda n: n.input[0] == g)
    w1, b1, _ = w.conv(fc1, g, point=True)
    relu = w.take(w.out(fc1), "Relu", "Relu")
    fc2 = w.take(w.out(relu), "Conv", "threshold fc2")
    w2, b2, _ = w.conv(fc2, w.out(relu), point=True)
    if w1.shape[:2] != (co, co) or b1 is None or w2.shape[1] != co or w2.shape[0] not in (1, co) or b2 is None:
        raise InputError(f"'{src}': unsupported ONNX node {_label(fc1 if w1.shape[:2] != (co, co) else fc2)} "
                         f"(threshold layer shapes); {_NOT_DEPLOY}")
    sig = w.take(w.out(fc2), "Sigmoid", "Sigmoid")
    s = w.out(sig)
    mul = w.take(s, "Mul", "α · mean|x|", pred=lambda n: len(n.input) == 2)
    other = mul.input[1] if mul.input[0] == s else mul.input[0]
    if other == g:
        kind = "cw"
    else:
        pi = w.producer.get(other)
        node = w.nodes[pi] if pi is not None else None
        if node is None or node.op_type != "ReduceMean" or node.input[0] != g or pi in w.visited:
            w.fail(s, "α · mean|x|")
        w.visited.add(pi)
        w.reduce_mean(node, [1], 1)
        kind = "cs"
    if (kind == "cw") != (w2.shape[0] == co) and co != 1:
        raise InputError(f"'{src}': unsupported ONNX node {_label(fc2)} ({w2.shape[0]} outputs does not match a "
                         f"{'channel-wise' if kind == 'cw' else 'channel-shared'} threshold); {_NOT_DEPLOY}")
    tau = w.out(mul)
    s1 = w.take(tau, "Sub", "x − τ", inputs=[r, tau])
    s2 = w.take(tau, "Sub", "−x − τ", inputs=[nx, tau])
    ra = w.take(w.out(s1), "Relu", "Relu")
    rb = w.take(w.out(s2), "Relu", "Relu")
    s3 = w.take(w.out(ra), "Sub", "relu(x − τ) − relu(−x − τ)", inputs=[w.out(ra), w.out(rb)])
    state[f"{p}.threshold.fc1.weight"] = w1[:, :, 0, 0]
    state[f"{p}.threshold.fc1.bias"] = np.zeros(co, np.float32)
    _put_bn(state, f"{p}.threshold.bn", np.ones(co, np.float32), b1)
    state[f"{p}.threshold.fc2.weight"] = w2[:, :, 0, 0]
    state[f"{p}.threshold.fc2.bias"] = b2
    return w.out(s3), kind


def _shortcut(w, t, h, stride, c_in, c_out, add):
    """Check that tensor `t` is the unit input `h`, subsampled by `stride`, zero-padded to `c_out`."""
    src = w.src

    def bad(node, why):
        raise InputError(f"'{src}': unsupported ONNX node {_label(node)} ({why}); {_NOT_DEPLOY}")

    def producer(name):
        i = w.producer.get(name)
        if i is None or i in w.visited:
            bad(add, "the shortcut is not the unit input")
        w.visited.add(i)
        return w.nodes[i]

    if c_out != c_in:
        cat = producer(t)
        if cat.op_type != "Concat" or len(cat.input) != 2 or int(w.attrs(cat).get("axis", 0)) % 4 != 1:
            bad(cat, "expected Concat of the shortcut and zero channels")
        zeros = w.const_value(cat.input[1], "the padding channels", cat)
        if zeros.ndim != 4 or zeros.shape[1] != c_out - c_in or np.any(zeros != 0):
            bad(cat, "the padding channels are not zeros")
        t = cat.input[0]
    if stride != 1:
        pool = producer(t)
        a = w.attrs(pool)
        if (pool.op_type != "AveragePool" or list(a.get("kernel_shape", [])) != [1, 1]
                or list(a.get("strides", [1, 1])) != [1, stride] or any(a.get("pads", [0, 0, 0, 0]))
                or int(a.get("ceil_mode", 0)) or a.get("auto_pad", "NOTSET") != "NOTSET"):
            bad(pool, f"expected AveragePool of size 1, stride {stride}")
        t = pool.input[0]
    if t != h:
        bad(add, "the shortcut is not the unit input")


def _onnx_meta(model, src) -> dict:
    props = {p.key: p.value for p in model.metadata_props}
    meta = {}
    try:
        if "drsn_edge.class_names" in props:
            meta["class_names"] = json.loads(props["drsn_edge.class_names"])
        if "drsn_edge.fs" in props:
            meta["fs"] = float(props["drsn_edge.fs"])
        if "drsn_edge.window" in props:
            meta["window"] = int(float(props["drsn_edge.window"]))
        if "drsn_edge.config" in props:
            cfg = json.loads(props["drsn_edge.config"])
            if isinstance(cfg, dict):
                meta["config"] = cfg
    except ValueError as exc:
        raise InputError(f"'{src}' has unreadable drsn_edge metadata ({exc}); pass fs, window and class_names "
                         "instead after removing the metadata") from None
    if "drsn_edge.normalization" in props:
        meta["normalization"] = props["drsn_edge.normalization"]
    if "drsn_edge.arch" in props:
        meta["arch"] = props["drsn_edge.arch"]
    return meta


def _verify_onnx(raw, model, batch, channels, window, src) -> dict | None:
    """Run the ONNX graph and the rebuilt model on one random batch; they must agree."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch

    x = np.random.default_rng(0).standard_normal((batch, channels, window)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as exc:  # noqa: BLE001 - the graph itself does not run
        raise InputError(f"'{src}' does not run in ONNX Runtime ({type(exc).__name__}); check the file") from None
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    tol = 1e-4 * (1.0 + float(np.abs(ref).max()))
    if not diff <= tol:
        raise CheckFailedError(f"the imported model differs from '{src}' by {diff:.3g} (tolerance {tol:.3g}); "
                               "please report this graph")
    return {"max_abs_diff": diff, "tolerance": tol}
