"""A run's checkpoints (lrc/train/checkpointing.py): written through a temporary file in their own folder and
renamed; checked before a resume trusts them; a damaged newest one gives way to the one before; a damaged
run folder (checkpoint or config.yaml) is an exit-2 error naming the file and saying what to do. Tiny
fits and real CLI runs for the rest are in tests/train/test_resume.py."""

import errno
import os
from pathlib import Path

import pytest
import torch

from lrc.cli import main
from lrc.config import load_config, validate
from lrc.files import DiskFullError
from lrc.train.checkpointing import DurableCheckpointIO, choose_checkpoint
from lrc.weights.checkpoints import CheckpointError, read_training_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


def training_checkpoint(step: int) -> dict:
    return {"state_dict": {"w": torch.full((4,), float(step))}, "global_step": step, "epoch": 0, "loops": {},
            "optimizer_states": []}


def save(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    DurableCheckpointIO().save_checkpoint(training_checkpoint(step), path)
    return path


def test_the_newest_good_checkpoint_is_chosen_and_damaged_ones_are_put_aside(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    save(ckpts / "step-00000004.ckpt", 4)
    save(ckpts / "step-00000008.ckpt", 8)
    os.link(ckpts / "step-00000008.ckpt", ckpts / "last.ckpt")
    assert choose_checkpoint(tmp_path) == ckpts / "last.ckpt"
    # a kill during a save (before atomic writes) left last.ckpt, and the step file it links, cut short
    with open(ckpts / "last.ckpt", "r+b") as fh:
        fh.truncate(fh.seek(0, 2) // 2)
    chosen = choose_checkpoint(tmp_path)
    assert chosen == ckpts / "step-00000004.ckpt" and torch.load(chosen, weights_only=True)["global_step"] == 4
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt.unusable", "step-00000004.ckpt",
                                                       "step-00000008.ckpt.unusable"]
    assert "is truncated or damaged" in caplog.text and "renamed it to last.ckpt.unusable" in caplog.text
    assert f"resuming {tmp_path} from {chosen} (step 4)" in caplog.text
    (ckpts / "step-00000004.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        choose_checkpoint(tmp_path, rename_damaged=False)
    assert "step-00000004.ckpt is empty (0 bytes)" in str(err.value)


@pytest.mark.parametrize("content, why", [
    (b"", "is empty (0 bytes)"),
    (b"PK\x03\x04 not a zip at all", "is truncated or damaged"),
    ("pickle", "pickles objects other than tensors"),
    ("plain", "is not a training checkpoint written by `lrc fit`"),
])
def test_a_checkpoint_is_checked_without_running_code(tmp_path, content, why):
    path = tmp_path / "last.ckpt"
    marker = tmp_path / "PWNED"
    if content == "pickle":
        class Payload:
            def __reduce__(self):
                return (open, (str(marker), "w"))
        torch.save({**training_checkpoint(1), "extra": Payload()}, path)
    elif content == "plain":
        torch.save({"w": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_training_checkpoint(path)
    assert str(path) in str(err.value) and why in str(err.value)
    assert not marker.exists()


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save(tmp_path / "step-00000004.ckpt", 4)
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError):
        DurableCheckpointIO().save_checkpoint(training_checkpoint(8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000004.ckpt"]


@pytest.fixture
def run_dir(tmp_path, tiny_overrides):
    """A run folder as `lrc fit` leaves it when stopped: its config.yaml, and a checkpoint (a real one,
    but of no use to these tests: they break the folder before it is read)."""
    from lrc.train.run import write_resolved_config

    run = tmp_path / "run"
    run.mkdir()
    loaded = load_config(DEMO, tiny_overrides)
    write_resolved_config(run, validate(loaded), loaded)
    save(run / "checkpoints" / "step-00000003.ckpt", 3)
    os.link(run / "checkpoints" / "step-00000003.ckpt", run / "checkpoints" / "last.ckpt")
    return run


@pytest.mark.parametrize("damage, expected", [
    ("", "config.yaml is empty (damaged)"),
    ("run: {name: x\n  seed: [", "config.yaml is not valid YAML (damaged?)"),
    ("- a\n- list\n", "config.yaml holds a list, not a run's config"),
    ("trainer: {max_epochs: 1}\n", "config.yaml has no run, data, model section(s)"),
])
def test_a_damaged_config_yaml_is_an_input_error_naming_the_file(run_dir, capsys, damage, expected):
    (run_dir / "config.yaml").write_text(damage)
    assert main(["fit", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(run_dir / "config.yaml") in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message, not a wall of text


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("damage, why", [("truncated", "is truncated or damaged"), ("empty", "is empty (0 bytes)"),
                                         ("pickle", "it pickles objects other than tensors")])
def test_a_damaged_only_checkpoint_is_an_input_error_naming_the_file(run_dir, capsys, damage, why):
    last = run_dir / "checkpoints" / "last.ckpt"
    marker = run_dir.parent / "PWNED"
    if damage == "pickle":  # written in place: the step file it links changes too
        with open(last, "r+b") as fh:
            torch.save({**training_checkpoint(3), "callbacks": {"x": _Payload(marker)}}, fh)
            fh.truncate()
    else:
        with open(last, "r+b") as fh:
            fh.truncate(0 if damage == "empty" else 1000)
    assert main(["fit", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"checkpoint {last} " in err and why in err
    assert not marker.exists()
    assert f"Start the run over in the same folder (the files above are kept, renamed *.unusable): lrc fit " \
           f"{run_dir / 'config.yaml'} --out {run_dir}" in err


def test_a_run_that_saved_nothing_says_how_to_start_it_again(run_dir, capsys):
    for p in (run_dir / "checkpoints").iterdir():
        p.unlink()
    assert main(["fit", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"Start it again in the same folder: lrc fit {run_dir / 'config.yaml'} --out {run_dir}" in err
