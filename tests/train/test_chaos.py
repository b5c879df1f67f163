"""Runs that survive what operators meet: SIGKILL at random points, a full disk, processes racing for one run
folder, a requeued job. Real `lrc fit` processes on the tiny corpus; each test says what it would have
caught on the code before periodic, atomic checkpoints and run-folder locks (issue 15)."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401 - imported now, so its log handler writes to the real stderr, not a test's capture
import pytest
import torch

from lrc.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def overrides_for(tiny_overrides: list[str], *more: str) -> list[str]:
    keys = {m.split("=", 1)[0] for m in more}
    return [o for o in tiny_overrides if o.split("=", 1)[0] not in keys] + list(more)


def fit_argv(out: Path, overrides: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "lrc.cli", "fit", str(DEMO), "--out", str(out), *extra, *overrides]


def newest_step(run: Path) -> int:
    folder = run / "checkpoints"
    steps = [int(p.name[5:-5]) for p in folder.glob("step-*.ckpt")] if folder.is_dir() else []
    return max(steps, default=0)


def leftovers(run: Path) -> list[str]:
    """Temporary files of interrupted writes, anywhere in the run folder."""
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp-*"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# 12 videos, 40 train records, batch 2: 20 steps an epoch, 60 in all; a checkpoint after every step
CHAOS = ("trainer.max_epochs=3", "data.batch_size=2", "run.checkpoint_every_n_steps=1")
KILLS = 4


@pytest.mark.slow
def test_sigkill_at_random_points_then_requeue_ends_with_the_weights_of_an_uninterrupted_run(tiny_overrides,
                                                                                              tmp_path, capsys):
    """A fit killed with SIGKILL (no handler runs: an OOM kill, a node lost, a preemption past its grace
    period) at KILLS random points, each time restarted with the one command a requeued job runs
    (`--resume-if-exists`), ends with exactly the weights of a run never interrupted. One kill is aimed at a
    checkpoint being written. Before issue 15 the only checkpoints were at epoch ends and on signals: a
    SIGKILL lost the run, and a kill during a save left a truncated last.ckpt."""
    overrides = overrides_for(tiny_overrides, *CHAOS)
    reference = tmp_path / "reference"
    done = subprocess.run(fit_argv(reference, overrides), env=ENV, capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "run"
    rng = random.Random(15)
    kills, mid_write, attempts = [], 0, 0
    while True:
        attempts += 1
        assert attempts <= KILLS + 2
        proc = subprocess.Popen(fit_argv(run, overrides, "--resume-if-exists"), env=ENV, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        target = newest_step(run) + rng.randint(3, 14)
        deadline = time.monotonic() + 240
        try:
            while proc.poll() is None and newest_step(run) < target and len(kills) < KILLS:
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.01)
            if proc.poll() is None and len(kills) < KILLS:
                if len(kills) == 1:  # the next save, caught while its temporary file is being written
                    while proc.poll() is None and not list((run / "checkpoints").glob(".*.tmp-*")):
                        assert time.monotonic() < deadline
                        time.sleep(0.001)
                    mid_write += 1
                else:
                    time.sleep(rng.uniform(0, 0.3))
                proc.kill()
                proc.wait()
                kills.append(newest_step(run))
                continue
            output, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, output[-3000:]
        break
    with capsys.disabled():
        print(f"\nchaos: {len(kills)} SIGKILLs, after checkpoints of steps {kills} ({mid_write} during a checkpoint "
              f"write); {attempts} starts")
    assert len(kills) == KILLS and attempts == KILLS + 1
    assert "which no longer runs (killed?); this process takes the run folder over" in output
    assert f"resuming {run} from {run / 'checkpoints' / 'last.ckpt'}" in output

    ref, got = weights(reference / "checkpoints" / "last.ckpt"), weights(run / "checkpoints" / "last.ckpt")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.allclose(ref[key], got[key], rtol=1e-6, atol=1e-7), key
    metrics = json.loads((run / "metrics.json").read_text())
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["train/steps"] == ref_metrics["train/steps"] == 60
    assert metrics["val/loss"] == pytest.approx(ref_metrics["val/loss"], rel=1e-5)
    # nothing of the killed processes is left: no partial write, no lock; the last 2 checkpoints kept
    assert leftovers(run) == [] and not (run / "lrc.lock").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step-00000059.ckpt",
                                                                      "step-00000060.ckpt"]
    assert os.path.samefile(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "step-00000060.ckpt")

    # the requeued job once more: finished, nothing to do
    capsys.readouterr()
    before = (run / "metrics.json").read_text()
    assert main(["fit", str(DEMO), "--out", str(run), "--resume-if-exists", *overrides]) == 0
    assert (run / "metrics.json").read_text() == before
    # another config into the same folder is refused, and the command the message offers works
    assert main(["fit", str(DEMO), "--out", str(run), "--resume-if-exists", *overrides, "model.encoder.depth=2"]) == 2
    err = capsys.readouterr().err
    assert f"run dir {run} holds a run of another config (model.encoder.depth: 1 there, 2 here)" in err
    assert f"continue that run as it was: lrc fit --resume {run}" in err
    assert main(["fit", "--resume", str(run)]) == 0
    # a plain `lrc fit --out` never writes over it
    assert main(["fit", str(DEMO), "--out", str(run), *overrides]) == 2
    assert "holds a finished run (it has metrics.json); lrc never overwrites a run" in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoints_are_periodic_atomic_in_their_own_folder_and_the_last_k_are_kept(tiny_overrides, tmp_path,
                                                                                    monkeypatch):
    """Every 3 steps and at each epoch end (20 steps in 2 epochs), each written as a temporary file in
    checkpoints/ and renamed there: never through the system's temp folder (before issue 15 Lightning wrote
    last.ckpt through a temporary file in /tmp and moved it, a copy when /tmp is another filesystem)."""
    from lrc.config import load_config
    from lrc.train.run import fit

    moves: list[tuple[str, str]] = []
    replace, move = os.replace, shutil.move
    monkeypatch.setattr(os, "replace", lambda a, b, **k: (moves.append((str(a), str(b))), replace(a, b, **k))[1])
    monkeypatch.setattr(shutil, "move", lambda a, b, *x, **k: (moves.append((str(a), str(b))), move(a, b, *x, **k))[1])
    run = tmp_path / "run"
    overrides = overrides_for(tiny_overrides, "trainer.max_epochs=2", "run.checkpoint_every_n_steps=3",
                              "run.keep_last_checkpoints=2", "run.checkpoint_every_minutes=null")
    fit(load_config(DEMO, overrides), out=str(run))
    ckpts = run / "checkpoints"
    into = [(a, b) for a, b in moves if Path(b).parent == ckpts]
    assert len(into) == 2 * 8  # saves at steps 3 6 9 10 12 15 18 20: the step file, then last.ckpt
    assert all(Path(a).parent == ckpts and Path(a).name.startswith(".") for a, _ in into)
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step-00000018.ckpt", "step-00000020.ckpt"]
    assert os.path.samefile(ckpts / "last.ckpt", ckpts / "step-00000020.ckpt")  # a hard link: no second copy
    assert torch.load(ckpts / "step-00000018.ckpt", weights_only=True)["lrc_run"]["reason"] == "periodic"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["lrc_run"]["reason"] == "epoch end"

    # by the clock: every 30 ms of training is about every step here (10 steps, about 0.1 s each)
    timed = tmp_path / "timed"
    fit(load_config(DEMO, overrides_for(tiny_overrides, "run.checkpoint_every_minutes=0.0005",
                                        "run.keep_last_checkpoints=3")), out=str(timed))
    steps = sorted((timed / "checkpoints").glob("step-*.ckpt"))
    assert len(steps) == 3 and steps[-1].name == "step-00000010.ckpt"
    assert [torch.load(p, weights_only=True)["lrc_run"]["reason"] for p in steps[:2]] == ["periodic", "periodic"]


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_an_input_error_and_the_suggested_resume_finishes(tiny_overrides, tmp_path,
                                                                                         monkeypatch, capsys):
    """The disk fills up while the third checkpoint is written (ENOSPC from fsync, as NFS and delayed allocation
    report it), through the real writer: exit 2 with the file named, the two earlier checkpoints intact, no
    partial file; once there is room, the command the message gives finishes the run."""
    real_fsync = os.fsync
    saves = []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "/checkpoints/.step-" in name:
            saves.append(name)
            if len(saves) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    overrides = overrides_for(tiny_overrides, "run.checkpoint_every_n_steps=2")
    assert main(["fit", str(DEMO), "--out", str(run), *overrides]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"no space left on the device while writing {run / 'checkpoints' / 'step-00000006.ckpt'}" in err
    assert f"Then continue the run from its last checkpoint: lrc fit --resume {run}" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step-00000002.ckpt",
                                                                      "step-00000004.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert leftovers(run) == [] and not (run / "lrc.lock").exists()
    monkeypatch.setattr(os, "fsync", real_fsync)  # room again
    assert main(["fit", "--resume", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 10


TMPFS_DRIVER = """
import json, os, subprocess, sys
mnt, report, argv, resume = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3500k", "tmpfs", mnt], check=True)
run = os.path.join(mnt, "run")
first = subprocess.run(argv, capture_output=True, text=True)
listing = sorted(os.listdir(os.path.join(run, "checkpoints")))
hidden = sorted(os.path.relpath(os.path.join(d, f), run) for d, _, fs in os.walk(run) for f in fs if ".tmp-" in f)
import torch
step = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), weights_only=True)["global_step"]
subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
second = subprocess.run(resume, capture_output=True, text=True)
metrics = json.load(open(os.path.join(run, "metrics.json"))) if os.path.exists(os.path.join(run, "metrics.json")) else {}
json.dump({"first": [first.returncode, first.stderr[-4000:]], "listing": listing, "hidden": hidden, "step": step,
           "second": [second.returncode, second.stderr[-4000:]], "metrics": metrics}, open(report, "w"))
"""


def tmpfs_unavailable(tmp_path: Path) -> str | None:
    """Why a small tmpfs cannot be mounted here (in a private user and mount namespace), else None."""
    if shutil.which("unshare") is None:
        return "the unshare tool is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                          capture_output=True, text=True)
    if done.returncode:
        return f"this machine does not allow mounting a tmpfs in a user namespace ({done.stderr.strip()[:200]})"
    return None


@pytest.mark.slow
def test_a_really_full_disk_on_a_small_tmpfs(tiny_overrides, tmp_path):
    """The real thing: the run folder on a 3.5 MB tmpfs, where the third 1.5 MB checkpoint does not fit. Before
    issue 15: a traceback, and a partial file on the full filesystem."""
    why = tmpfs_unavailable(tmp_path)
    if why:
        pytest.skip(why)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    overrides = overrides_for(tiny_overrides, "run.checkpoint_every_n_steps=1")
    run = mnt / "run"
    argv = fit_argv(run, overrides)
    resume = [sys.executable, "-m", "lrc.cli", "fit", "--resume", str(run)]
    report = tmp_path / "report.json"
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", TMPFS_DRIVER, str(mnt), str(report),
                           json.dumps(argv), json.dumps(resume)], env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(report.read_text())
    code, err = r["first"]
    assert code == 2, err
    assert "Traceback" not in err and "no space left on the device while writing" in err
    assert f"lrc fit --resume {run}" in err
    assert r["listing"] == ["last.ckpt", "step-00000001.ckpt", "step-00000002.ckpt"] and r["hidden"] == []
    assert r["step"] == 2  # last.ckpt: the newest complete checkpoint
    assert r["second"][0] == 0, r["second"][1]  # the command the message gives, once there is room
    assert r["metrics"]["train/steps"] == 10


def race(argvs: list[list[str]], run: Path) -> tuple[subprocess.Popen, list[tuple[int, int, str]]]:
    """Start every command at once. Each trains without end (many epochs), so whichever takes the folder still
    holds it when the others look, however loaded the machine; once they have exited, the holder is stopped
    with SIGTERM (it saves and exits 143). Returns the holder and (pid, exit code, stderr) of the others."""
    saved = newest_step(run)
    procs = [subprocess.Popen(a, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in argvs]
    try:
        deadline = time.monotonic() + 300
        while sum(p.poll() is not None for p in procs) < len(procs) - 1:
            assert time.monotonic() < deadline, "the processes did not settle"
            time.sleep(0.1)
        holder, = [p for p in procs if p.poll() is None]
        while newest_step(run) <= saved:  # training: it has saved a checkpoint of its own
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=120)
        return holder, [(p.pid, p.returncode, p.communicate()[1]) for p in procs if p is not holder]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_processes_racing_for_one_run_folder(tiny_overrides, tmp_path):
    """Three `lrc fit --out SAME` started together: one trains, the others stop at once with exit 2 naming it
    (before issue 15 all three trained into one folder: one config.yaml, logs from several); then two
    `--resume SAME` likewise."""
    run = tmp_path / "run"
    overrides = overrides_for(tiny_overrides, "trainer.max_epochs=10000", "run.checkpoint_every_n_steps=1")
    holder, others = race([fit_argv(run, overrides) for _ in range(3)], run)
    assert holder.returncode == 143
    for pid, code, err in others:
        assert code == 2 and "Traceback" not in err, err[-2000:]
        assert f"run dir {run} is in use by another lrc process: pid {holder.pid} on host" in err
    writers = {p.name.split(".")[-2] for p in (run / "logs" / "tb").glob("events.*")}  # ...tfevents.T.HOST.PID.N
    assert writers == {str(holder.pid)}
    assert json.loads((run / "lrc.lock").read_text() if (run / "lrc.lock").exists() else "{}") == {}  # released

    resume = [sys.executable, "-m", "lrc.cli", "fit", "--resume", str(run)]
    holder, others = race([resume, resume], run)
    assert holder.returncode == 143
    (pid, code, err), = others
    assert code == 2 and f"is in use by another lrc process: pid {holder.pid} on host" in err
