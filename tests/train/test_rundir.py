"""Run folders (lrc/train/rundir.py): one process at a time holds a folder, a dead holder's lock is taken over
with a warning, what a folder holds decides what lrc fit may do with it, and a file is never taken for a
folder. Real processes, real file locks; the filesystem without them is simulated by making lockf fail as it
does there (ENOLCK)."""

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lrc.cli import main
from lrc.train.rundir import (LOCK_NAME, RunDirError, RunDirLock, inspect_run_dir, open_new_run, refusal,
                              start_over)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from lrc.train.rundir import RunDirLock
lock = RunDirLock({folder!r}).acquire()
print("held", flush=True)
time.sleep(120)
"""


def holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), folder=str(folder))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = holder(folder)
    try:
        with pytest.raises(RunDirError) as err:
            RunDirLock(folder).acquire()
        text = str(err.value)
        assert f"run dir {folder} is in use by another lrc process: pid {proc.pid} on host {socket.gethostname()}" in text
        assert "Wait for it to finish" in text
    finally:
        proc.send_signal(signal.SIGKILL)  # killed: it never releases its lock itself
        proc.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # its name is still in the file
    with caplog.at_level(logging.WARNING, logger="lrc"):
        lock = RunDirLock(folder).acquire()
    assert lock.took_over is not None and lock.took_over.pid == proc.pid
    assert f"was left by pid {proc.pid} on host {socket.gethostname()}" in caplog.text
    assert "which no longer runs" in caplog.text
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (folder / LOCK_NAME).exists()  # a clean end leaves no lock behind


FORK_THEN_HOLD = """
import os, sys, time
sys.path.insert(0, {root!r})
from lrc.train.rundir import RunDirLock
lock = RunDirLock({folder!r}).acquire()
child = os.fork()  # as a data loader worker is forked: it outlives a SIGKILLed parent for a while
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(120)
"""


def test_children_of_a_killed_holder_do_not_keep_the_folder(tmp_path):
    # a fit killed with SIGKILL leaves its data loader workers running for a few seconds; they were forked with
    # the lock's file open, and must not keep the requeued fit out of its own folder
    folder = tmp_path / "run"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", FORK_THEN_HOLD.format(root=str(ROOT), folder=str(folder))],
                            stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        with pytest.raises(RunDirError):
            RunDirLock(folder).acquire()  # the parent still runs: refused
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the forked child still runs
        with RunDirLock(folder) as lock:
            assert lock.took_over is not None and lock.took_over.pid == proc.pid
    finally:
        os.kill(child, signal.SIGKILL)


def test_without_file_locks_a_dead_local_holder_is_taken_over_and_a_remote_one_refused(tmp_path, monkeypatch, caplog):
    def no_locks(fd, op, *args):
        raise OSError(errno.ENOLCK, "No locks available")  # what some Lustre / NFS mounts answer
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    folder = tmp_path / "run"
    folder.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(),
                                                "started": "2025-01-01T00:00:00", "command": "lrc fit x.yaml"}))
    with caplog.at_level(logging.WARNING, logger="lrc"):
        with RunDirLock(folder) as lock:
            assert lock.took_over.pid == int(gone.stdout)
    assert "which no longer runs" in caplog.text
    # a holder that still runs on this host is refused
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(json.dumps({"pid": alive.pid, "host": socket.gethostname()}))
        with pytest.raises(RunDirError, match=f"pid {alive.pid} on host {socket.gethostname()}"):
            RunDirLock(folder).acquire()
    finally:
        alive.kill()
        alive.wait()
    # another host: whether it runs cannot be checked here; the message says how to remove the lock
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "node-17", "started": "2025-01-01T00:00:00",
                                                "command": "lrc fit x.yaml"}))
    with pytest.raises(RunDirError) as err:
        RunDirLock(folder).acquire()
    assert "pid 4242 on host node-17" in str(err.value)
    assert f"rm {folder / LOCK_NAME}" in str(err.value)
    subprocess.run(["rm", str(folder / LOCK_NAME)], check=True)  # the command the message suggests
    with RunDirLock(folder) as lock:
        assert lock.held


def test_what_a_folder_holds_decides_what_fit_may_do(tmp_path):
    run = tmp_path / "run"
    assert inspect_run_dir(run).kind == "free"
    run.mkdir()
    (run / LOCK_NAME).write_text("{}")  # a lock left behind does not make a folder taken
    assert inspect_run_dir(run).kind == "free"
    (run / "config.yaml").write_text("run: {}\n")
    state = inspect_run_dir(run)
    assert state.kind == "unstarted" and state.outputs == [] and refusal(state) is None
    (run / "logs").mkdir()
    (run / "logs" / "metrics.csv").write_text("step,loss\n1,2.0\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / f".step-00000001.ckpt.tmp-{2**22 + 7}-0").write_bytes(b"partial")  # a killed writer's
    state = inspect_run_dir(run)
    assert state.kind == "unstarted" and [p.name for p in state.outputs] == ["logs"]
    start_over(state)  # what it left is kept aside, the partial write removed
    assert (run / "abandoned-1" / "logs" / "metrics.csv").is_file() and not (run / "logs").exists()
    assert not (run / "checkpoints").exists()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step-00000004.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "step-00000012.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    state = inspect_run_dir(run)
    assert state.kind == "resumable"
    assert [p.name for p in state.checkpoints] == ["last.ckpt", "step-00000012.ckpt", "step-00000004.ckpt"]
    assert f"Continue it with: lrc fit --resume {run}" in refusal(state)
    (run / "metrics.json").write_text("{}")
    assert inspect_run_dir(run).kind == "finished" and "holds a finished run" in refusal(inspect_run_dir(run))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert inspect_run_dir(other).kind == "foreign" and "is not a run dir" in refusal(inspect_run_dir(other))
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        inspect_run_dir(afile)


def test_a_new_run_locks_its_folder_and_releases_it(tmp_path, monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID",
                "TORCHELASTIC_RUN_ID", "LRC_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)
    cfg = {"run": {"root": str(tmp_path / "runs"), "name": "exp"}}
    path, lock = open_new_run(cfg, str(tmp_path / "out"))
    with lock:
        assert json.loads((path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirError, match="is in use by another lrc process"):
            open_new_run(cfg, str(tmp_path / "out"))
    assert not (path / LOCK_NAME).exists()
    (path / "metrics.json").write_text("{}")
    with pytest.raises(RunDirError, match="holds a finished run"):
        open_new_run(cfg, str(tmp_path / "out"))
    assert not (path / LOCK_NAME).exists()  # a refusal releases the lock it took


@pytest.mark.parametrize("command", [
    ["fit", str(DEMO), "--out", "{file}"],
    ["fit", str(DEMO), "--out", "{file}", "--resume-if-exists"],
    ["fit", "--resume", "{file}"],
    ["test", str(DEMO), "--ckpt", "{file}", "--out", "{file}"],
    ["niah", str(DEMO), "--ckpt", "{file}", "--out", "{file}"],
    ["export", "{file}", "--out", "{file}"],
])
def test_an_out_that_names_a_regular_file_is_an_input_error(tmp_path, capsys, command):
    afile = tmp_path / "results.txt"
    afile.write_text("keep me\n")
    assert main([part.replace("{file}", str(afile)) for part in command]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and str(afile) in err
    assert afile.read_text() == "keep me\n"


def test_ablate_out_naming_a_file_is_an_input_error(tmp_path, capsys):
    ablation = tmp_path / "a.yaml"
    ablation.write_text(f"ablation:\n  base: {DEMO}\n  grid: {{trainer.max_epochs: [1]}}\n")
    afile = tmp_path / "results.txt"
    afile.write_text("keep me\n")
    assert main(["ablate", str(ablation), "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_resume_if_exists_needs_a_folder(capsys, tiny_overrides):
    assert main(["fit", str(DEMO), "--resume-if-exists", *tiny_overrides]) == 2
    assert "--resume-if-exists needs the run's folder: pass --out RUN_DIR" in capsys.readouterr().err
    assert main(["fit", "--resume", "x", "--resume-if-exists"]) == 2


def test_a_study_folder_is_held_by_one_lrc_ablate(tmp_path, capsys):
    ablation = tmp_path / "a.yaml"
    ablation.write_text(f"ablation:\n  base: {DEMO}\n  grid: {{trainer.max_epochs: [1]}}\n")
    out = tmp_path / "study"
    out.mkdir()
    proc = holder(out)
    try:
        assert main(["ablate", str(ablation), "--out", str(out)]) == 2
    finally:
        proc.kill()
        proc.wait()
    assert f"run dir {out} is in use by another lrc process: pid {proc.pid}" in capsys.readouterr().err
    assert not (out / "cells").exists()  # nothing ran
