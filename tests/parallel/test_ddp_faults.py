"""Faults under DDP, with real 2-process fits on CPU (gloo, Lightning's launcher through the real `lrc fit`, as
tests/parallel/test_distributed.py runs them): a signal that reaches one rank stops every rank after the same
step, with one checkpoint; bad samples are counted over the whole split, not per rank; a non-finite loss on one
rank is skipped by all. Test plugins are registered by a driver script, which Lightning's launcher re-runs
for rank 1."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID",
              "TORCHELASTIC_RUN_ID", "LRC_RUN_DIR")
DDP = ["distributed.strategy=ddp", "distributed.devices=2", "data.batch_size=2"]

DRIVER = f"""
import os, sys
sys.path[:0] = [{str(ROOT)!r}]
import torch
from lrc.constraints import NonNegativeInt, PositiveInt
from lrc.registry import COMPRESSORS, SAMPLERS

Uniform, Pooling = SAMPLERS.get("uniform"), COMPRESSORS.get("pooling")
RANK = int(os.environ.get("LOCAL_RANK", "0"))


class SignalOnRank:
    \"\"\"The uniform sampler; on rank ``rank`` only, its ``at_call``-th call sends that process ``signal_name``,
    unless the file ``flag`` exists (it is created then: a resumed run is not signalled again).\"\"\"

    def __init__(self, num_frames: PositiveInt = 4, rank: NonNegativeInt = 1, at_call: PositiveInt = 3,
                 signal_name: str = "SIGTERM", flag: str = ""):
        self.inner, self.rank, self.at_call, self.calls = Uniform(num_frames), rank, at_call, 0
        self.signum = getattr(__import__("signal"), signal_name)
        self.flag = flag

    def __call__(self, video_frames, fps, duration=None):
        self.calls += 1
        if RANK == self.rank and self.calls == self.at_call and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), self.signum)
        return self.inner(video_frames, fps, duration)


class NanOnRank(Pooling):
    \"\"\"Average pooling whose ``at_call``-th training forward on rank ``rank`` returns NaN.\"\"\"

    def __init__(self, in_dim: PositiveInt, clip_len: PositiveInt = 4, tokens_per_frame: PositiveInt = 16,
                 rank: NonNegativeInt = 1, at_call: PositiveInt = 2):
        super().__init__(in_dim, clip_len, tokens_per_frame)
        self.rank, self.at_call, self.calls = rank, at_call, 0

    def forward(self, tokens):
        out = super().forward(tokens)
        if self.training:
            self.calls += 1
            if RANK == self.rank and self.calls == self.at_call:
                out = out * float("nan")
        return out


SAMPLERS.add("signal_on_rank", SignalOnRank)
COMPRESSORS.add("nan_on_rank", NanOnRank)
from lrc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def launch(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = "1"

    def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(driver), *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    return run


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step(launch, tiny_overrides, tmp_path):
    """SIGTERM reaches rank 1 only (rank 0 never sees it). Before issue 15 rank 1 left the training loop alone
    and rank 0 waited for it in the next collective: the fit hung. Now the ranks agree after each step, so both
    stop after step 2, take part in one checkpoint, and the run resumes on 2 ranks to the end."""
    run = tmp_path / "run"
    done = launch("fit", str(DEMO), "--out", str(run), *tiny_overrides, *DDP, "data.cache_frames=false",
                  "data.num_workers=0",  # the sampler signals its own process: the rank's, not a loader worker's
                  "data.sampler.name=signal_on_rank", "data.sampler.at_call=3", f"data.sampler.flag={tmp_path / 'sent'}",
                  timeout=240)
    # rank 1 gets the signal while loading its second batch (its third sample): step 2 still runs everywhere
    assert done.returncode == 143, done.stderr[-3000:]
    note = json.loads((run / "interrupted.json").read_text())
    assert note["signal"] == "SIGTERM" and note["global_step"] == 2
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert f"Resume with: lrc fit --resume {run}" in done.stderr
    resumed = launch("fit", "--resume", str(run), timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 10  # 40 samples / (2 ranks x 2)


@pytest.mark.slow
def test_bad_samples_are_counted_over_the_whole_split_not_per_rank(launch, tiny_overrides, corpus, tmp_path):
    """Two unreadable train samples of 40, one in each rank's first batch, with data.max_bad_fraction=0.03:
    1/40 per rank is allowed, 2/40 of the split is not. Before issue 15 each rank counted its own (1 of 40 each)
    and the run went on."""
    from lrc.data.resumable import EpochShuffleSampler

    data = tmp_path / "corpus"
    shutil.copytree(corpus, data)
    records = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert len(records) == 40
    (data / "videos" / "broken.mp4").write_bytes(b"")
    firsts = [EpochShuffleSampler(40, seed=0, num_replicas=2, rank=r).order(0)[0] for r in (0, 1)]
    for i in firsts:
        records[i]["video"] = "videos/broken.mp4"
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    overrides = [o for o in tiny_overrides if not o.startswith("data.root=")] + [f"data.root={data}"]
    run = tmp_path / "run"
    done = launch("fit", str(DEMO), "--out", str(run), *overrides, *DDP, "data.max_bad_fraction=0.03")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "2 of 40 train samples (5.0%) could not be used, more than data.max_bad_fraction=0.03" in done.stderr
    skipped = json.loads((run / "skipped.json").read_text())
    assert sorted(s["id"] for s in skipped) == sorted(records[i]["id"] for i in firsts)
    assert all(s["reason"] == "zero bytes" for s in skipped)


@pytest.mark.slow
def test_a_nan_loss_on_one_rank_is_skipped_by_every_rank(launch, tiny_overrides, tmp_path):
    """run.on_nan=skip under DDP: rank 1's second step is NaN; both ranks skip that step (neither waits for the
    other in the gradient all-reduce) and the run finishes."""
    run = tmp_path / "run"
    done = launch("fit", str(DEMO), "--out", str(run), *tiny_overrides, *DDP, "run.on_nan=skip",
                  "model.compressor.name=nan_on_rank")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/nan_skipped"] == 1 and metrics["train/steps"] == 10  # as on one device: counted, no update
    assert re.search(r"non-finite loss at step \d+ .*batch skipped \(run.on_nan=skip", done.stderr)
    # the stop setting stops every rank, with the step named
    stopped = launch("fit", str(DEMO), "--out", str(tmp_path / "stopped"), *tiny_overrides, *DDP,
                     "model.compressor.name=nan_on_rank")
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert re.search(r"error: non-finite loss at step \d+ \(epoch 0", stopped.stderr)
