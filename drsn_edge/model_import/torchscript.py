"""TorchScript archives and torch.save files, read without executing code from them."""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import zipfile


from ..errors import InputError
from ._common import _MAX_RECORD

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
    from ..models import ARCHITECTURES

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
