"""Training with the paper's recipe and on-the-fly noise augmentation.

Recipe (Zhao et al. 2020): SGD momentum 0.9, LR 0.1 → 0.01 → 0.001 over 40 % / 40 % / 20 % of the
epochs, L2 1e-4, batch 128. Each epoch every training window gets a fresh random noise type and SNR
(some stay clean). The best epoch on a fixed noisy validation set is kept. Launched by torchrun it
trains with DistributedDataParallel (gloo on CPU); only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data.dataset import Dataset, NOISE_TYPES, load_dataset, normalize
from .data.noise import add_noise
from .errors import InputError


@dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = "drsn-cw"
    epochs: int = 100
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, float] = (0.4, 0.8)
    noise: tuple[str, ...] = NOISE_TYPES
    snr_min: float = -5.0
    snr_max: float = 5.0
    clean_fraction: float = 0.2
    width: float = 1.0
    depth: int = 4
    seed: int = 0
    resume: bool = False
    max_train_windows: int | None = None
    val_windows: int = 1500
    threads: int | None = None
    val_data: str | None = None
    init: str | None = None
    extra_meta: dict = field(default_factory=dict)


SELECTION_RULE = "highest validation accuracy; ties broken by lower validation loss, then the later epoch"
# fine-tuning from a bundle (train --init): a short recipe at a tenth of the paper's learning rate
FINETUNE_EPOCHS = 15
FINETUNE_LR = 0.01


def recipe(epochs: int | None = None, lr: float | None = None) -> tuple[int, float]:
    """Epochs and learning rate of a fine-tuning run (--init): the short recipe for what the user did not set."""
    return (FINETUNE_EPOCHS if epochs is None else epochs), (FINETUNE_LR if lr is None else lr)


def is_better(rec: dict, best: dict | None) -> bool:
    """Does epoch record `rec` beat `best` under SELECTION_RULE? (Equal loss too: the later epoch wins.)"""
    if best is None:
        return True
    if rec["val_acc"] != best["val_acc"]:
        return rec["val_acc"] > best["val_acc"]
    return rec.get("val_loss", math.inf) <= best.get("val_loss", math.inf)


def best_record(history: list[dict]) -> dict | None:
    best = None
    for rec in history:
        if is_better(rec, best):
            best = rec
    return best


def augment(x: np.ndarray, rng: np.random.Generator, kinds, snr_min: float, snr_max: float,
            clean_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give each window a random noise type and SNR (or none). Returns (noisy x, kind, snr)."""
    n = len(x)
    kind = np.full(n, "none", dtype=object)
    snr = np.full(n, np.nan, dtype=np.float32)
    out = x.copy()
    if not kinds:
        return out, kind.astype(str), snr
    noisy = rng.random(n) >= clean_fraction
    choice = rng.integers(len(kinds), size=n)
    values = rng.uniform(snr_min, snr_max, size=n).astype(np.float32)
    for i, k in enumerate(kinds):
        m = noisy & (choice == i)
        if m.any():
            out[m] = add_noise(x[m], k, values[m][:, None], rng)
            kind[m] = k
            snr[m] = values[m]
    return out, kind.astype(str), snr


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _lr_at(epoch: int, cfg: TrainConfig) -> float:
    e1 = math.ceil(cfg.milestones[0] * cfg.epochs)
    e2 = math.ceil(cfg.milestones[1] * cfg.epochs)
    return cfg.lr * (1.0 if epoch < e1 else 0.1 if epoch < e2 else 0.01)


def _validate_config(cfg: TrainConfig) -> None:
    from .models import ARCHITECTURES
    from .validate import count, finite

    if cfg.arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{cfg.arch}'; choose one of {', '.join(ARCHITECTURES)}")
    finite("--lr", cfg.lr, 0.0, 10.0)  # the command line refuses 0; a library caller may freeze the weights
    finite("--weight-decay", cfg.weight_decay, 0.0, 1.0)
    finite("--width", cfg.width, 0.0, 16.0, lo_open=True)
    count("--depth", cfg.depth, 1, 64)
    finite("--clean-fraction", cfg.clean_fraction, 0.0, 1.0)
    for v in (cfg.snr_min, cfg.snr_max):
        finite("--snr-range", v, -100.0, 100.0)
    if cfg.epochs < 1:
        raise InputError("epochs must be at least 1")
    if cfg.batch < 2:
        raise InputError("batch must be at least 2 (BatchNorm needs more than one window)")
    if not (0 <= cfg.clean_fraction <= 1):
        raise InputError("clean fraction must be in 0..1")
    if cfg.snr_min > cfg.snr_max:
        raise InputError(f"SNR range {cfg.snr_min}..{cfg.snr_max} is empty")
    bad = [k for k in cfg.noise if k not in NOISE_TYPES]
    if bad:
        raise InputError(f"unknown noise type(s) {bad}; use {', '.join(NOISE_TYPES)}")
    if not Path(cfg.out).suffix == ".drsn":
        raise InputError(f"model bundles end in .drsn, got '{cfg.out}'")
    from .data.dataset import manifest_path
    from .outputs import guard_file

    guard_file(cfg.out, [cfg.data, manifest_path(cfg.data)], [checkpoint_path(cfg.out)])


def checkpoint_path(out) -> Path:
    """The resume checkpoint beside the output bundle: m.drsn → m.resume.pt."""
    return Path(out).with_suffix(".resume.pt")


def preflight(cfg: TrainConfig) -> None:
    """Everything a run can refuse before it starts (options, output, data, checkpoint), checked once by
    the launching process so that N workers do not repeat the same error."""
    _validate_config(cfg)
    load_training_data(cfg)
    if cfg.resume and not checkpoint_path(cfg.out).exists():
        raise InputError(f"cannot resume: no checkpoint '{checkpoint_path(cfg.out)}' (train without --resume first)")


def load_training_data(cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset, str]:
    """(whole dataset, train split, validation windows, where the validation windows come from)."""
    from .data.dataset import align_classes

    ds = load_dataset(cfg.data)
    train_ds = ds.select_split("train")
    if len(train_ds) == 0:
        raise InputError(f"'{cfg.data}' has no 'train' split")
    if len(np.unique(train_ds.y)) < len(ds.class_names):
        raise InputError("the train split lacks some classes; every class needs training windows")
    if cfg.val_data is not None:
        vds = load_dataset(cfg.val_data)
        if (vds.split == "val").any():
            vds = vds.select_split("val")
        _check_same_signal(ds, vds, cfg.val_data)
        val_ds, val_src = align_classes(vds, ds.class_names, what=f"--val-data '{cfg.val_data}'"), str(cfg.val_data)
    else:
        val_ds, val_src = ds.select_split("val"), f"{cfg.data} (val split)"
    if len(val_ds) == 0:
        raise InputError(f"'{cfg.data}' has no 'val' split (needed to pick the best epoch); add one or pass --val-data")
    if cfg.max_train_windows and len(train_ds) > cfg.max_train_windows:
        pick = np.random.default_rng(cfg.seed).choice(len(train_ds), cfg.max_train_windows, replace=False)
        train_ds = train_ds.subset(np.sort(pick))
    return ds, train_ds, val_ds, val_src


def _check_same_signal(ds: Dataset, other: Dataset, where: str) -> None:
    if abs(ds.fs - other.fs) > 1e-6 or ds.window != other.window or ds.normalization != other.normalization:
        raise InputError(f"'{where}' ({other.fs:g} Hz, window {other.window}) does not match the training data "
                         f"({ds.fs:g} Hz, window {ds.window}); import both with the same --target-fs and --window")


def initial_model(cfg: TrainConfig, ds: Dataset):
    """A fresh model, or (cfg.init) the bundle's weights; a new classifier head when its classes differ."""
    from .models import create_model

    if cfg.init is None:
        return create_model(cfg.arch, classes=len(ds.class_names), width=cfg.width, depth=cfg.depth), None
    from .bundle import load_bundle

    src = load_bundle(cfg.init)
    if abs(src.fs - ds.fs) > 1e-6 or src.window != ds.window or src.normalization != ds.normalization:
        raise InputError(f"--init model '{cfg.init}' takes {src.window}-point windows at {src.fs:g} Hz; "
                         f"the data has {ds.window} at {ds.fs:g} Hz; re-import the data at the model's rate and window")
    config = dict(src.meta["config"], classes=len(ds.class_names))
    model = create_model(src.arch, **config)
    same_head = src.class_names == list(ds.class_names)
    state = {k: v for k, v in src.model.state_dict().items() if same_head or not k.startswith("fc.")}
    model.load_state_dict(state, strict=same_head)
    info = {"model": str(cfg.init), "arch": src.arch, "head": "kept" if same_head else "new",
            "source_classes": src.class_names}
    return model, info


def fixed_validation_set(val: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Validation windows, a part clean and the rest with fixed seeded noise across the SNR range."""
    rng = np.random.default_rng(cfg.seed + 7919)
    if len(val) > cfg.val_windows:
        val = val.subset(np.sort(rng.choice(len(val), cfg.val_windows, replace=False)))
    x, _, _ = augment(val.x, rng, list(cfg.noise), cfg.snr_min, cfg.snr_max, cfg.clean_fraction)
    return normalize(x, val.normalization), val.y


def train(cfg: TrainConfig, progress=None) -> dict:
    """Train and write the best model as a .drsn bundle. `progress(event, **info)` receives updates."""
    import torch
    import torch.distributed as dist

    from .models import count_parameters

    _validate_config(cfg)
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    progress = progress if (progress and rank == 0) else (lambda *a, **k: None)

    ds, train_ds, val_ds, val_src = load_training_data(cfg)
    torch.manual_seed(cfg.seed)
    model, init_info = initial_model(cfg, ds)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    ckpt_path = checkpoint_path(cfg.out)
    start_epoch, best_state, history = 0, None, []
    if cfg.resume:
        start_epoch, best_state, history = _load_checkpoint(ckpt_path, cfg, model, opt)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    xv, yv = fixed_validation_set(val_ds, cfg)
    n = len(train_ds)
    local_batch = max(2, cfg.batch // world)
    steps = n // (local_batch * world)
    if steps < 1:
        raise InputError(f"{n} training windows are fewer than one batch of {cfg.batch}; lower --batch")
    progress("start", epochs=cfg.epochs, steps=steps, start_epoch=start_epoch, windows=n,
             params=count_parameters(model), world=world)
    t0 = time.perf_counter()
    seen = 0
    for epoch in range(start_epoch, cfg.epochs):
        rec, count = _run_epoch(cfg, epoch, net, opt, train_ds, steps, local_batch, rank, world, progress)
        seen += count * world
        rec.update(_validation(model, xv, yv))
        improved = is_better(rec, best_record(history))
        history.append(rec)
        if improved:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if rank == 0:
            _save_checkpoint(ckpt_path, cfg, model, opt, epoch + 1, best_record(history)["val_acc"], best_state, history)
        progress("epoch", **rec, best_val_acc=best_record(history)["val_acc"])
    elapsed = time.perf_counter() - t0
    if best_state is None:  # resumed a finished run
        best_state = model.state_dict()
    model.load_state_dict(best_state)
    model.eval()
    best = best_record(history) or {}
    summary = {
        "arch": model.arch, "out": str(cfg.out), "epochs": cfg.epochs, "best_val_acc": best.get("val_acc"),
        "best_val_loss": best.get("val_loss"), "best_epoch": best.get("epoch"), "selection": SELECTION_RULE,
        "train_windows": n, "validation": val_src, "init": init_info, "wall_s": elapsed,
        "windows_per_s": seen / elapsed if elapsed > 0 else None, "world_size": world,
        "params": count_parameters(model), "threads": threads,
    }
    if rank == 0:
        _write_bundle(cfg, model, ds, train_ds, val_ds, history, best, val_src, init_info, world, progress)
        if ckpt_path.exists():
            ckpt_path.unlink()
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _run_epoch(cfg, epoch, net, opt, train_ds, steps, local_batch, rank, world, progress) -> tuple[dict, int]:
    """One pass over freshly augmented training windows; returns the epoch record and the windows seen here."""
    import torch
    from torch.nn import functional as F

    for g in opt.param_groups:
        g["lr"] = _lr_at(epoch, cfg)
    n = len(train_ds)
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(n)[: steps * local_batch * world]
    mine = order.reshape(steps, world, local_batch)[:, rank, :]
    # each rank augments only its own windows, with its own stream
    rrng = np.random.default_rng([cfg.seed, epoch, rank])
    flat = mine.reshape(-1)
    xa, _, _ = augment(train_ds.x[flat], rrng, list(cfg.noise), cfg.snr_min, cfg.snr_max, cfg.clean_fraction)
    xa = torch.from_numpy(normalize(xa, train_ds.normalization)).view(steps, local_batch, 1, -1)
    ya = torch.from_numpy(train_ds.y[flat]).view(steps, local_batch)
    net.train()
    loss_sum, correct, count = 0.0, 0, 0
    for s in range(steps):
        logits = net(xa[s])
        loss = F.cross_entropy(logits, ya[s])
        if not torch.isfinite(loss):
            raise InputError(f"training diverged: the loss became {float(loss)} at epoch {epoch + 1}, step {s + 1}; "
                             "no bundle was written — lower --lr or --weight-decay")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(ya[s])
        correct += int((logits.detach().argmax(1) == ya[s]).sum())
        count += len(ya[s])
        progress("step", epoch=epoch, step=s + 1, loss=loss_sum / count, acc=correct / count)
    return {"epoch": epoch + 1, "lr": _lr_at(epoch, cfg), "loss": loss_sum / count, "train_acc": correct / count}, count


def _validation(model, xv: np.ndarray, yv: np.ndarray) -> dict:
    """Accuracy and mean cross-entropy on the fixed validation windows."""
    from .evaluate import predict_logits

    logits = predict_logits(model, xv).astype(np.float64)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return {"val_acc": float((logits.argmax(1) == yv).mean()), "val_loss": float(-logp[np.arange(len(yv)), yv].mean())}


def _write_bundle(cfg, model, ds, train_ds, val_ds, history, best, val_src, init_info, world, progress) -> None:
    from .bundle import make_meta, save_bundle
    from .fileio import sha256_file
    from .guard import fit_on_data

    progress("guard")
    guard = fit_on_data(model, train_ds, val_ds, cfg.noise, cfg.snr_min, cfg.snr_max, cfg.clean_fraction, cfg.seed)
    recipe = {k: v for k, v in asdict(cfg).items()
              if k not in ("data", "out", "resume", "extra_meta", "threads", "val_data", "init")}
    test_ids = sorted({str(r) for r in ds.recording[ds.split == "test"]})
    training = {"recipe": recipe, "data": str(Path(cfg.data).resolve()), "data_sha256": sha256_file(cfg.data),
                "data_content_sha256": ds.content_hash(), "data_source": ds.source,
                "test_recordings": test_ids, "validation": val_src, "init": init_info,
                "selection": SELECTION_RULE, "best_epoch": best.get("epoch"), "history": history,
                "world_size": world}
    meta = make_meta(model, ds.class_names, ds.fs, ds.window, ds.normalization, training=training,
                     metrics={"best_val_acc": best.get("val_acc"), "best_val_loss": best.get("val_loss")},
                     guard=guard.to_json(), **cfg.extra_meta)
    save_bundle(model, meta, cfg.out)


def load_checkpoint(path: Path, cfg: TrainConfig, model) -> dict:
    """Read a resume checkpoint (weights only, no code) and refuse one that belongs to another run, saying
    what differs, before any weight is copied."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or not {"model", "optimizer", "epoch", "best_acc", "history"} <= set(ck):
            raise ValueError("missing fields")
    except Exception as exc:  # noqa: BLE001 - truncated zip, unpickling refusal, wrong content
        raise InputError(f"cannot resume: '{path}' is truncated or not a drsn-edge checkpoint "
                         f"({type(exc).__name__}); delete it or train without --resume") from None
    if ck.get("arch") != cfg.arch:
        raise InputError(f"cannot resume: '{path}' is for {ck.get('arch')}, not {cfg.arch}")
    mine = {"width": cfg.width, "depth": cfg.depth, "classes": model.fc.out_features}
    theirs = ck.get("config") or {}
    diff = [f"{k} {theirs[k]} (this run: {v})" for k, v in mine.items() if k in theirs and theirs[k] != v]
    expected = model.state_dict()
    shapes = [f"{k} {list(v.shape)} (this run: {list(expected[k].shape)})" for k, v in ck["model"].items()
              if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in ck["model"]]
    if diff or shapes or missing:
        what = ", ".join(diff) or (f"weight {shapes[0]}" if shapes else f"no weight '{missing[0]}'")
        raise InputError(f"cannot resume: '{path}' was trained with another model: {what}; resume with the same "
                         "--width/--depth and data classes, or delete the checkpoint")
    model.load_state_dict(ck["model"])
    return ck


def _load_checkpoint(path, cfg, model, opt):
    if not path.exists():
        raise InputError(f"cannot resume: no checkpoint '{path}' (train without --resume first)")
    ck = load_checkpoint(path, cfg, model)
    opt.load_state_dict(ck["optimizer"])
    return int(ck["epoch"]), ck["best_state"], json.loads(ck["history"])


def _save_checkpoint(path, cfg, model, opt, epoch, best_acc, best_state, history) -> None:
    import torch

    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        for v in model.state_dict().values():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise InputError("training diverged: the weights became non-finite; no bundle was written — "
                                 "lower --lr or --weight-decay")
        torch.save({"arch": cfg.arch, "config": {"width": cfg.width, "depth": cfg.depth,
                                                  "classes": model.fc.out_features}, "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "best_acc": best_acc, "best_state": best_state, "history": json.dumps(history)}, tmp)
