"""Shared by the importers: metadata resolution and mapping a state dict onto the registry."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path


from ..errors import InputError


BN_EPS = 1e-5  # BatchNorm1d's default, used by every BN of the registry models
_MAX_RECORD = 1 << 31  # bytes per TorchScript archive record (these models are a few MB at most)
_CONFIG_DEFAULTS = {"stages": 3, "kernel": 3, "in_channels": 1}
_META_JSON_KEYS = ("class_names", "classes", "fs", "window", "normalization", "arch", "config")
_NOT_DEPLOY = ("import recognises only the float deploy-form graph written by `drsn-edge export`; an ONNX exported "
               "from the training-form model or a quantized one is not supported (import the PyTorch state dict "
               "or TorchScript file instead)")



# --------------------------------------------------------------------------------------------------
# metadata


def _read_meta_json(path) -> dict:
    if path is None:
        return {}
    p = Path(path)
    try:
        from ..limits import JSON_CAP, read_capped

        obj = json.loads(read_capped(p, JSON_CAP, "metadata file").decode("utf-8"))
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
        from ..models import ARCHITECTURES

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

    from ..models import CONFIG_KEYS, create_model

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
