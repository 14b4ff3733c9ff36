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

from pathlib import Path


from ..errors import InputError
from ._common import _check_strides, _read_meta_json, _registry_model, _resolve_meta
from .torchscript import _from_torch_save, _from_torchscript, _zip_root
from .onnx import _from_onnx

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
    from ..bundle import make_meta, save_bundle
    from ..fileio import sha256_file
    from ..models import ARCHITECTURES, count_parameters

    src, out = Path(src), Path(out)
    if out.suffix != ".drsn":
        raise InputError(f"model bundles end in .drsn, got '{out.name}'")
    from ..outputs import guard_file

    guard_file(out, [src, meta_json])
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
