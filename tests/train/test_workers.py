"""Decoding in DataLoader worker processes (the default) keeps SIGINT/SIGTERM handling whole: a signal sent to the
run's whole process group (Ctrl-C in a terminal, `kill -- -PGID`) stops the fit cleanly, with a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.utils.data

from lrc.registry import SAMPLERS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


class TouchInWorker:
    """The uniform sampler, which creates ``flag`` once it is called inside a DataLoader worker process."""

    def __init__(self, num_frames: int = 4, flag: str = ""):
        self.inner, self.flag = SAMPLERS.get("uniform")(num_frames), Path(flag)

    def __call__(self, video_frames, fps, duration=None):
        if torch.utils.data.get_worker_info() is not None:
            self.flag.touch()
        return self.inner(video_frames, fps, duration)


DRIVER = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
from lrc.registry import SAMPLERS
from test_workers import TouchInWorker
SAMPLERS.add("touch_in_worker", TouchInWorker)
from lrc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_signal_to_the_whole_process_group_stops_the_fit_with_a_checkpoint(tiny_overrides, tmp_path):
    signum, code = signal.SIGTERM, 143
    flag, run_dir = tmp_path / "worker-decoding", tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith("trainer.max_epochs")] + [
        "trainer.max_epochs=100", "data.num_workers=1", "data.cache_frames=false",
        "data.sampler.name=touch_in_worker", f"data.sampler.flag={flag}"]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "fit", str(DEMO), "--out", str(run_dir), *overrides],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not flag.exists():  # a worker is decoding: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(proc.pid, signum)  # the training process and its workers alike
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert json.loads((run_dir / "interrupted.json").read_text())["signal"] == signal.Signals(signum).name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and "DataLoader worker" not in err
