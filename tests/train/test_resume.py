"""Reliability: a fit stopped by a real SIGTERM saves, exits 143 and resumes to exactly the weights of an
uninterrupted run (the remaining batches of the epoch, in the same order); a loss that goes NaN stops the
run with the step and the sample ids."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lrc.cli import main
from lrc.config import load_config
from lrc.registry import SAMPLERS
from lrc.train.run import fit

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


class SignalOnce:
    """The uniform sampler, which sends this process a real signal (SIGTERM, SIGINT) on its ``at_call``-th
    call unless ``flag`` exists (then creates it): it arrives while a batch is being loaded, mid-epoch."""

    def __init__(self, num_frames: int = 4, at_call: int = 1, flag: str = "", signal_name: str = "SIGTERM"):
        self.inner = SAMPLERS.get("uniform")(num_frames)
        self.at_call, self.flag, self.calls = at_call, Path(flag), 0
        self.signum = getattr(signal, signal_name)

    def __call__(self, video_frames, fps, duration=None):
        self.calls += 1
        if self.calls == self.at_call and not self.flag.exists():
            self.flag.touch()
            os.kill(os.getpid(), self.signum)
        return self.inner(video_frames, fps, duration)


@pytest.fixture
def signal_sampler():
    """``signal_once`` registered for this test only (test_docs lists every registered plugin)."""
    SAMPLERS.add("signal_once", SignalOnce)
    yield
    SAMPLERS._table.pop("signal_once", None)


# the subprocess: the real CLI with the test sampler registered
DRIVER = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
from lrc.registry import SAMPLERS
from test_resume import SignalOnce
SAMPLERS.add("signal_once", SignalOnce)
from lrc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(signal_sampler, tiny_overrides, tmp_path):
    # batch size 2 over the corpus' train records: several steps per epoch, so step 3 is mid-epoch
    flag = tmp_path / "signal-sent"
    overrides = [o for o in tiny_overrides if not o.startswith("trainer.max_epochs")] + [
        "trainer.max_epochs=2", "data.batch_size=2", "data.cache_frames=false",
        "data.num_workers=0",  # the sampler signals its own process: the training process, loading in-process
        "data.sampler.name=signal_once", f"data.sampler.flag={flag}",
        "data.sampler.at_call=5",  # the first sample of batch 3: the run stops after step 3
    ]

    flag.touch()  # the reference run is never signalled
    reference, ref_metrics = fit(load_config(DEMO, overrides), out=str(tmp_path / "reference"))
    flag.unlink()

    run_dir = tmp_path / "interrupted"
    proc = subprocess.run([sys.executable, "-c", DRIVER, "fit", str(DEMO), "--out", str(run_dir), *overrides],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert f"lrc fit --resume {run_dir}" in proc.stderr
    note = json.loads((run_dir / "interrupted.json").read_text())
    assert note["signal"] == "SIGTERM" and note["global_step"] == 3 and note["epoch"] == 0
    assert not (run_dir / "metrics.json").exists()
    steps_per_epoch = ref_metrics["train/steps"] / 2
    assert 3 < steps_per_epoch  # it really stopped mid-epoch

    # resuming may not change the model or the data
    assert main(["fit", "--resume", str(run_dir), "model.encoder.depth=2"]) == 2
    assert main(["fit", "--resume", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/steps"] == ref_metrics["train/steps"]
    assert metrics["train/nan_skipped"] == 0

    ref, got = weights(reference), weights(run_dir)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.allclose(ref[key], got[key], rtol=1e-6, atol=1e-7), key
    assert metrics["val/loss"] == pytest.approx(ref_metrics["val/loss"], rel=1e-5)

    # Ctrl-C takes the same path: the step finishes, last.ckpt is saved, exit code 130
    flag.unlink()
    ctrl_c = tmp_path / "ctrl-c"
    proc = subprocess.run([sys.executable, "-c", DRIVER, "fit", str(DEMO), "--out", str(ctrl_c), *overrides,
                           "data.sampler.signal_name=SIGINT"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert json.loads((ctrl_c / "interrupted.json").read_text())["signal"] == "SIGINT"
    assert torch.load(ctrl_c / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3

    # a finished run: resuming says so and changes nothing
    before = (run_dir / "metrics.json").read_text()
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert (run_dir / "metrics.json").read_text() == before


@pytest.mark.slow
def test_a_diverging_loss_stops_with_the_step_and_sample_ids(tiny_overrides, tmp_path, capsys):
    # a real divergence: AdamW with learning rates of 1e30 sends the weights to ~1e30 after one step
    lr = "optim.lr={encoder: 1.0e30, compressor: 1.0e30, projector: 1.0e30, llm: 1.0e30}"
    run_dir = tmp_path / "run"
    assert main(["fit", str(DEMO), "--out", str(run_dir), *tiny_overrides, lr]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 1 " in err and "samples ['" in err and "base=" in err
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # nothing saved from the diverged state

    skipping = tmp_path / "skip"
    assert main(["fit", str(DEMO), "--out", str(skipping), *tiny_overrides, lr, "run.on_nan=skip"]) == 0
    metrics = json.loads((skipping / "metrics.json").read_text())
    assert metrics["train/nan_skipped"] >= 1


def test_train_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    from lrc.data.resumable import EpochShuffleSampler, ResumableLoader

    data = list(range(10))
    loader = ResumableLoader(data, batch_size=3, seed=7, collate_fn=list)
    loader.order.set_epoch(1)
    epoch1 = list(loader)
    assert epoch1 == _epoch(ResumableLoader(data, batch_size=3, seed=7, collate_fn=list), 1)
    assert sorted(sum(epoch1, [])) == data and epoch1 != _epoch(loader, 2)

    # two batches in, the state goes into the checkpoint; a fresh loader continues with the rest
    it = iter(_at_epoch(loader, 1))
    next(it), next(it)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches"] == 2
    fresh = ResumableLoader(data, batch_size=3, seed=7, collate_fn=list)
    fresh.load_state_dict(state)
    fresh.order.set_epoch(1)  # what Lightning does at the epoch start
    assert list(fresh) == epoch1[2:] and len(fresh) == len(epoch1)
    assert list(fresh) == epoch1  # the skip applies to the resumed epoch's pass only

    with pytest.raises(ValueError, match="resumes exactly only on the data it started with"):
        ResumableLoader(data[:-1], batch_size=3, seed=7).load_state_dict(state)

    # under DDP each process takes its share of the same permutation
    shares = [EpochShuffleSampler(10, seed=7, num_replicas=2, rank=r).order(1) for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == data and shares[0] + shares[1] != data


def _at_epoch(loader, epoch):
    loader.order.set_epoch(epoch)
    return loader


def _epoch(loader, epoch):
    return list(_at_epoch(loader, epoch))


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["fit", "--resume", str(tmp_path)]) == 2
    assert "not a run dir" in capsys.readouterr().err
    assert main(["fit"]) == 2


@pytest.mark.slow
def test_the_commands_an_unstarted_or_damaged_run_folder_suggests_work(tiny_overrides, tmp_path, capsys):
    """A fit that fails while building the model leaves config.yaml in its folder: the same --out is taken
    again (before issue 15: "lrc never overwrites a run"). A run whose checkpoints are all damaged, or that
    saved none, is refused by --resume with a command that starts it over in place; that command works."""
    run = tmp_path / "run"
    assert main(["fit", str(DEMO), "--out", str(run), *tiny_overrides, "model.compressor.head_dim=48"]) == 2
    assert "could not be built" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert main(["fit", str(DEMO), "--out", str(run), *tiny_overrides]) == 0
    assert "never reached training (it holds only config.yaml); starting it over" in capsys.readouterr().err

    # a damaged config.yaml: --resume names it; the command it gives continues the run with the config given
    (run / "metrics.json").unlink()
    (run / "config.yaml").write_text("run: {name: x\n")
    assert main(["fit", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.yaml'} is not valid YAML (damaged?)" in err
    assert f"lrc fit CONFIG --out {run} --resume-if-exists" in err
    assert main(["fit", str(DEMO), "--out", str(run), "--resume-if-exists", *tiny_overrides]) == 0
    assert "takes the config given here as the run's" in capsys.readouterr().err
    assert "model" in OmegaConf.load(run / "config.yaml") and (run / "metrics.json").is_file()

    (run / "metrics.json").unlink()
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        with open(ckpt, "r+b") as fh:
            fh.truncate(100)
    assert main(["fit", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    suggested = f"lrc fit {run / 'config.yaml'} --out {run}"
    assert "is truncated or damaged" in err and err.rstrip().endswith(suggested)
    assert main(suggested.split()[1:]) == 0
    assert sorted(p.name for p in (run / "abandoned-1" / "checkpoints").iterdir()) == [
        "last.ckpt.unusable", "step-00000010.ckpt.unusable"]
    assert (run / "abandoned-1" / "logs" / "metrics.csv").is_file() and (run / "metrics.json").is_file()

    (run / "metrics.json").unlink()
    shutil.rmtree(run / "checkpoints")
    assert main(["fit", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint: it stopped before saving anything" in err and err.rstrip().endswith(suggested)
    assert main(suggested.split()[1:]) == 0
    assert (run / "abandoned-2" / "logs").is_dir() and (run / "metrics.json").is_file()


def test_a_run_saved_before_newer_keys_still_resumes(tmp_path):
    # a run config written by an older lrc: AdamW's betas where optim had them, no eval section (added later);
    # resuming (and lrc.load, which reads the same file) fills what is missing from today's defaults
    from omegaconf import OmegaConf

    from lrc.config import load_config, validate
    from lrc.train.rundir import read_run_config
    from lrc.train.run import _resumed_config

    old = OmegaConf.to_container(load_config(DEMO).cfg, resolve=False)
    old.pop("eval")
    old["optim"].pop("optimizer", None)
    old["optim"]["betas"] = [0.9, 0.95]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    cfg = validate(_resumed_config(read_run_config(tmp_path), []))
    assert cfg["optim"]["optimizer"] == {**cfg["optim"]["optimizer"], "name": "adamw", "betas": [0.9, 0.95]}
    assert cfg["eval"]["after_fit"] is False
