"""Root cause 10: `train --resume` with a checkpoint of another run (width, depth, class count) or a
truncated one says what differs in one line; the checkpoint is '<name>.resume.pt' beside the output."""

import pytest

from .contract import expect


def _checkpoint(cwd, assets, **cfg_over):
    import torch

    from drsn_edge.models import create_model
    from drsn_edge.train import TrainConfig, _save_checkpoint, checkpoint_path

    cfg = TrainConfig(data=str(assets / "d.npz"), out=str(cwd / "m.drsn"), **{k: v for k, v in cfg_over.items()
                                                                              if k != "classes"})
    model = create_model(cfg.arch, classes=cfg_over.get("classes", 10), width=cfg.width, depth=cfg.depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = checkpoint_path(cfg.out)
    _save_checkpoint(path, cfg, model, opt, 1, 0.5, None, [])
    return path


def test_checkpoint_name_is_stem_dot_resume_pt():
    from drsn_edge.train import checkpoint_path

    assert str(checkpoint_path("runs/m.drsn")) == "runs/m.resume.pt"


@pytest.mark.parametrize("saved,needle", [({"width": 2.0}, "width 2.0"), ({"depth": 2}, "depth 2"),
                                          ({"classes": 4}, "classes 4")])
def test_resume_from_another_run_says_what_differs(work, assets, saved, needle):
    cwd = work("d.npz")
    _checkpoint(cwd, assets, **saved)
    expect(["train", "--data", "d.npz", "-o", "m.drsn", "--resume", "--epochs", "2", "--batch", "8"], cwd, "input",
           contains=needle, timeout=300)


@pytest.mark.parametrize("cut", [0, 100, -200])
def test_truncated_checkpoint_is_one_line(work, assets, cut):
    cwd = work("d.npz")
    path = _checkpoint(cwd, assets)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    expect(["train", "--data", "d.npz", "-o", "m.drsn", "--resume", "--epochs", "2", "--batch", "8"], cwd, "input",
           contains="truncated", timeout=300)


def test_resume_without_checkpoint_is_one_line(work):
    expect(["train", "--data", "d.npz", "-o", "m.drsn", "--resume"], work("d.npz"), "input", contains="no checkpoint")
