"""Checkpoints: atomic, round-trip exact, refuse corrupt or mismatched files, never unpickle."""

import pickle
from pathlib import Path

import pytest
import torch

from mmkgc.errors import CheckpointError
from mmkgc.training.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint


def _model(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Linear(width, 2))


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    save_checkpoint(tmp_path / "ck", model, {"epoch": 2}, opt, {"sampler": gen.get_state()})
    expected_next = torch.rand(4, generator=gen)

    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    opt2 = torch.optim.Adam(fresh.parameters(), lr=0.01)
    state, rng = load_checkpoint(tmp_path / "ck", fresh, opt2)
    assert state["epoch"] == 2 and "mmkgc_version" in state
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    gen2 = torch.Generator()
    gen2.set_state(rng["sampler"])
    assert torch.equal(torch.rand(4, generator=gen2), expected_next)


def test_overwrite_leaves_no_temp_dirs(tmp_path: Path):
    model = _model()
    for epoch in range(3):
        save_checkpoint(tmp_path / "last", model, {"epoch": epoch})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert read_checkpoint_state(tmp_path / "last")["epoch"] == 2


def test_shape_mismatch_is_reported(tmp_path: Path):
    save_checkpoint(tmp_path / "ck", _model(4), {"epoch": 1})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "ck", _model(5))


def test_corrupt_weights_and_missing_checkpoint(tmp_path: Path):
    save_checkpoint(tmp_path / "ck", _model(), {"epoch": 1})
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "ck", _model())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing", _model())


class _Evil:
    def __reduce__(self):
        return (print, ("executed!",))


def test_pickled_training_state_is_refused_not_executed(tmp_path: Path, capsys):
    model = _model()
    opt = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "ck", model, {"epoch": 1}, opt)
    with open(tmp_path / "ck" / "training_state.pt", "wb") as fh:
        pickle.dump({"optimizer": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(tmp_path / "ck", model, opt)
    assert "executed!" not in capsys.readouterr().out
