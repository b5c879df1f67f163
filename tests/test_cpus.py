"""run.threads (lrc/cpus.py): validated, resolved from the CPUs this process may use, applied to torch's pools and
to the data pipeline (workers by default, one decoder thread each), and OpenMP told to sleep, not spin, when the
`lrc` command starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lrc.cli import main
from lrc.config import load_config, validate
from lrc.cpus import (WAIT_POLICY_ENV, apply_threads, available_cpus, data_workers, decode_threads,
                      prefer_passive_waits, resolve_threads)
from tests.conftest import DEMO


def test_the_default_is_the_cpus_this_process_may_run_on(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert available_cpus() == len(os.sched_getaffinity(0))
    assert resolve_threads(None) == available_cpus() and resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # a choice made in the environment is the default
    assert resolve_threads(None) == 5 and resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    assert resolve_threads(None) == available_cpus()


@pytest.mark.parametrize("value, what", [("0", "must be at least 1, got 0"), ("two", "expected int >= 1"),
                                         ("1.5", "expected int >= 1")])
def test_run_threads_is_validated_and_the_error_names_the_key(capsys, value, what):
    code = main(["validate", str(DEMO), f"run.threads={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "command line: run.threads: " in err and what in err, err


def test_a_validated_config_has_threads_and_workers_unset_by_default():
    cfg = validate(load_config(DEMO, ["run.threads=1"]))
    assert cfg["run"]["threads"] == 1
    assert validate(load_config(DEMO))["data"]["num_workers"] is None


def test_apply_threads_sizes_torchs_pool(caplog, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_threads(None) == available_cpus() and torch.get_num_threads() == available_cpus()
        with caplog.at_level("WARNING", logger="lrc.cpus"):
            apply_threads(available_cpus() + 1)
        assert "take turns" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_the_data_pipeline_follows_run_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert data_workers(None, 2) == 1 and data_workers(None, 16) == 4 and data_workers(None, 64) == 8
    assert data_workers(0, 16) == 0 and data_workers(3, 1) == 3  # a value given is kept
    assert decode_threads(1, 8) == 1  # each worker decodes with one thread
    assert decode_threads(0, 8) == 8  # the training process decodes with all of them, between steps


def test_no_worker_processes_where_the_platform_has_no_semaphores(monkeypatch, caplog):
    import multiprocessing

    class NoLocks:
        def Lock(self):
            raise OSError("sem_open is not implemented on this platform")

    monkeypatch.setattr(multiprocessing, "get_context", lambda *a: NoLocks())
    with caplog.at_level("WARNING", logger="lrc.cpus"):
        assert data_workers(None, 8) == 0
    assert "cannot run DataLoader worker processes" in caplog.text


def test_the_data_module_takes_workers_and_decoder_threads_from_run_threads(corpus):
    from lrc.data.dataset import VideoDataModule

    common = dict(train_file=str(corpus / "train.jsonl"), val_file=str(corpus / "val.jsonl"), sampler=None,
                  prompts=None, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    auto = VideoDataModule(**common, threads=8)
    assert auto.num_workers == 2 and auto.common["decode_threads"] == 1
    inline = VideoDataModule(**common, num_workers=0, threads=8)
    assert inline.num_workers == 0 and inline.common["decode_threads"] == 8
    assert inline._loader("val", False, 2).persistent_workers is False
    assert auto._loader("val", False, 2).persistent_workers is True


def test_passive_waits_are_preferred_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(WAIT_POLICY_ENV, raising=False)
    prefer_passive_waits()
    assert os.environ[WAIT_POLICY_ENV] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY_ENV, "ACTIVE")
    prefer_passive_waits()
    assert os.environ[WAIT_POLICY_ENV] == "ACTIVE"


def test_the_lrc_command_sets_the_wait_policy_before_torch_is_imported():
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_ENV}
    code = ("import sys, os; from lrc.cli import main; main(['plugins', 'list']); "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "PASSIVE False"
