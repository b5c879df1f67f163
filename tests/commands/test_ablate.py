"""lrc ablate: plan expansion, bad ablation files, and real tiny studies (results, failures, resume, Ctrl-C)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrc.cli import main
from lrc.commands.ablate import ablate
from lrc.commands.ablate.plan import load_plan, validate_cells
from lrc.commands.ablate.report import CellResult, _series_axes, _why_no_value, plot_results
from lrc.commands.ablate.runner import last_error
from tests.conftest import DEMO, ROOT, tiny_override_list


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def ablation(tmp_path: Path, body: str, name: str = "study.yaml") -> Path:
    return write(tmp_path / name, f"ablation:\n  base: {DEMO}\n" + body)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
def test_grid_is_the_cartesian_product_in_file_order(tmp_path):
    path = ablation(tmp_path, """
  grid:
    model.compressor.name: [tome, pooling]
    model.compressor.tokens_per_frame: [4, 16, 64]
  overrides: {trainer.max_epochs: 3}
""")
    plan = load_plan(path, ["data.batch_size=2"])
    assert plan.name == "study" and plan.axes == ["compressor.name", "tokens_per_frame"]  # short, unambiguous
    assert [tuple(c.varied.values()) for c in plan.cells] == [
        ("tome", 4), ("tome", 16), ("tome", 64), ("pooling", 4), ("pooling", 16), ("pooling", 64)]
    # ablation overrides, then the cell's values, then the command line; each cell from the base file
    assert plan.cells[1].overrides == ["trainer.max_epochs=3", "model.compressor.name=tome",
                                       "model.compressor.tokens_per_frame=16", "data.batch_size=2"]
    assert {c.base for c in plan.cells} == {DEMO.resolve()}
    assert plan.cells[1].slug == "compressor.name-tome__tokens_per_frame-16"


def test_seeds_multiply_cells_and_set_run_seed(tmp_path):
    path = ablation(tmp_path, """
  grid: {model.compressor.name: [tome, pooling]}
  seeds: [0, 1, 2]
""")
    plan = load_plan(path)
    assert len(plan.cells) == 6
    assert [c.seed for c in plan.cells[:3]] == [0, 1, 2]
    assert plan.cells[2].overrides[-1] == "run.seed=2" and plan.cells[2].slug.endswith("__seed-2")
    assert len({c.slug for c in plan.cells}) == 6


def test_cells_with_their_own_bases_and_labels(tmp_path):
    other = write(tmp_path / "other.yaml", f"base: [{DEMO}]\nrun: {{name: other}}\n")
    path = ablation(tmp_path, """
  cells:
    - {label: A}
    - {label: B, base: other.yaml}
    - {label: C, base: other.yaml, model.compressor.tokens_per_frame: 4, trainer.max_epochs: 2}
    - {label: D, trainer: {max_epochs: 2}}
""")
    plan = load_plan(path)
    assert plan.axes == ["label", "base", "tokens_per_frame", "max_epochs"]  # max_epochs: the keys that differ
    assert [c.varied for c in plan.cells] == [
        {"label": "A", "base": "tiny", "tokens_per_frame": "(base)", "max_epochs": "(base)"},
        {"label": "B", "base": "other", "tokens_per_frame": "(base)", "max_epochs": "(base)"},
        {"label": "C", "base": "other", "tokens_per_frame": 4, "max_epochs": 2},
        {"label": "D", "base": "tiny", "tokens_per_frame": "(base)", "max_epochs": 2}]
    assert [c.base.name for c in plan.cells] == ["tiny.yaml", "other.yaml", "other.yaml", "tiny.yaml"]
    assert plan.cells[3].overrides == ["trainer.max_epochs=2"]  # nested mappings become dotted keys


def test_plot_series_leave_out_axes_that_follow_from_the_x_axis(tmp_path):
    """A labelled cell's base follows from its label: the plot has one bar per label, not a series
    per base; a real second axis of a grid stays a series."""
    other = write(tmp_path / "other.yaml", f"base: [{DEMO}]\nrun: {{name: other}}\n")
    cells = load_plan(ablation(tmp_path, """
  cells:
    - {label: A}
    - {label: B, base: other.yaml}
"""))
    grid = load_plan(ablation(tmp_path, """
  grid:
    model.compressor.name: [tome, pooling]
    model.compressor.tokens_per_frame: [4, 16]
""", name="grid.yaml"))
    done = lambda plan: [CellResult(cell=c, status="done", metrics={"val/mcq_acc": 0.5}) for c in plan.cells]
    assert other.exists() and cells.axes == ["label", "base"] and _series_axes(cells, done(cells)) == []
    assert _series_axes(grid, done(grid)) == ["tokens_per_frame"]
    assert [p.name for p in plot_results(cells, done(cells), tmp_path / "plots")] == ["val_mcq_acc.png"]
    failed = CellResult(cell=cells.cells[0], status="failed")
    assert _why_no_value([failed]) == "failed" and _why_no_value(done(cells)[:1]) == "no such metric"


def test_slugs_are_filesystem_safe_unique_and_stable(tmp_path):
    path = ablation(tmp_path, """
  grid: {run.name: ["a/b", "a b", "a:b", plain, "16"]}
""")
    slugs = [c.slug for c in load_plan(path).cells]
    assert len(set(slugs)) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in slugs)
    assert slugs == [c.slug for c in load_plan(path).cells]
    assert "run.name-plain" in slugs
    # a value that looks like another type stays what the file says: the string "16"
    assert load_plan(path).cells[4].overrides == ['run.name="16"']


def test_command_line_overrides_apply_last_to_every_cell(tmp_path, tiny_overrides):
    path = ablation(tmp_path, """
  grid: {model.compressor.name: [tome, pooling]}
  overrides: {trainer.max_epochs: 3, data.batch_size: 2}
""")
    plan = load_plan(path, [*tiny_overrides, "trainer.max_epochs=1"])
    configs, invalid = validate_cells(plan)
    assert not invalid
    for cell in plan.cells:
        cfg = configs[cell.slug]
        assert cfg["trainer"]["max_epochs"] == 1  # command line over the ablation's overrides
        assert cfg["data"]["batch_size"] == 4  # tiny_overrides set it too
        assert cfg["model"]["compressor"]["name"] == cell.varied["compressor.name"]


def test_a_cell_whose_config_is_invalid_is_reported_the_others_validate(tmp_path):
    # mlp derives its token count from `shuffle` and takes no tokens_per_frame
    path = ablation(tmp_path, """
  grid:
    model.compressor.name: [tome, mlp]
    model.compressor.tokens_per_frame: [16]
""")
    plan = load_plan(path)
    configs, invalid = validate_cells(plan)
    assert list(configs) == ["compressor.name-tome__tokens_per_frame-16"]
    assert list(invalid) == ["compressor.name-mlp__tokens_per_frame-16"]
    assert "has no argument 'tokens_per_frame'" in invalid["compressor.name-mlp__tokens_per_frame-16"]


BAD = {
    "unknown key": ("  gird: {model.compressor.name: [tome]}\n", "ablation.gird: unknown key. Did you mean 'grid'"),
    "empty grid": ("  grid: {}\n", "ablation.grid: expected a mapping of config keys to lists"),
    "grid value not a list": ("  grid: {model.compressor.name: tome}\n", "expected a non-empty list of values"),
    "grid key not a config key": ("  grid: {model.compresor.name: [tome, pooling]}\n",
                                  "not a config key: model has no key 'compresor'. Did you mean 'compressor'"),
    "unknown section": ("  grid: {modle.compressor.name: [tome]}\n", "no section 'modle'"),
    "grid and cells": ("  grid: {run.seed: [1]}\n  cells: [{}]\n", "not both"),
    "neither": ("  seeds: [0]\n", "not neither"),
    "bad seeds": ("  grid: {run.seed: [1]}\n  seeds: 3\n", "ablation.seeds: expected a list of distinct integers"),
    "overrides repeat a grid key": ("  grid: {run.seed: [1, 2]}\n  overrides: {run.seed: 3}\n",
                                    "run.seed is also varied by the cells"),
    "overrides repeat the seeds": ("  grid: {run.name: [a, b]}\n  seeds: [0, 1]\n  overrides: {run.seed: 3}\n",
                                   "run.seed is also varied by the seeds"),
    "plugin argument no cell accepts": ("  grid: {model.compressor.tokens_per_fram: [4, 16]}\n",
                                        "no cell of the ablation has a valid config"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_ablation_files_are_clear_errors_exit_2(tmp_path, capsys, case):
    body, message = BAD[case]
    path = ablation(tmp_path, body)
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err, err


def test_bad_base_path_command_line_and_file_shape_errors(tmp_path, capsys):
    path = write(tmp_path / "a.yaml", "ablation:\n  base: missing.yaml\n  grid: {run.seed: [1]}\n")
    assert main(["ablate", str(path), "--dry-run"]) == 2
    assert f"experiment config {tmp_path / 'missing.yaml'} does not exist" in capsys.readouterr().err
    path = ablation(tmp_path, "  grid: {run.seed: [1, 2]}\n")
    assert main(["ablate", str(path), "--dry-run", "run.seed=5"]) == 2
    assert "command line: run.seed: varied by the ablation" in capsys.readouterr().err
    assert main(["ablate", str(DEMO), "--dry-run"]) == 2  # an experiment config, not an ablation
    assert "It looks like an experiment config: run it with `lrc fit`" in capsys.readouterr().err
    assert main(["ablate", str(tmp_path / "nope.yaml")]) == 2
    assert "ablation file" in capsys.readouterr().err


def test_last_error_finds_what_went_wrong():
    lrc_error = "INFO lrc: run dir: x\nerror: 2 config problem(s):\n  a: bad\n  b: worse\n"
    assert last_error(lrc_error, 2) == "error: 2 config problem(s): a: bad b: worse"
    traceback = "UserWarning: meh\nTraceback (most recent call last):\n  File x\nRuntimeError: boom\n"
    assert last_error(traceback, 1) == "RuntimeError: boom"
    assert last_error("", -signal.SIGKILL).startswith("killed by SIGKILL (out of memory?")
    assert last_error("", 3) == "exit code 3 (no output)"


# ---------------------------------------------------------------------------------------------
# Real studies: every cell is a tiny `lrc fit` in a child process
# ---------------------------------------------------------------------------------------------
STUDY = """ablation:
  name: tiny-study
  base: {base}
  cells:
    - {{model.compressor.name: tome}}
    - {{model.compressor.name: pooling}}
    # passes validation, then every training sample is too long: the fit stops with exit code 2
    - {{model.compressor.name: pooling, data.max_length: 8}}
  metrics: [val/mcq_acc, val/loss]
"""
TOME, POOLING, FAILS = ("compressor.name-tome__max_length-base", "compressor.name-pooling__max_length-base",
                        "compressor.name-pooling__max_length-8")


@pytest.fixture(scope="module")
def study(corpus, tmp_path_factory):
    """One finished tiny study (two cells done, one failed), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ablate")
    path = write(tmp / "study.yaml", STUDY.format(base=DEMO))
    overrides = tiny_override_list(corpus, tmp)
    out = tmp / "out"
    lines: list[str] = []
    t0 = time.perf_counter()
    code = ablate(path, out=out, overrides=overrides, echo=lines.append)
    return {"path": path, "out": out, "overrides": overrides, "code": code, "lines": lines,
            "seconds": time.perf_counter() - t0}


@pytest.mark.slow
def test_study_writes_table_csv_and_plots(study):
    out = study["out"]
    assert study["code"] == 1  # one cell failed
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted([TOME, POOLING, FAILS])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["cell"] for r in rows] == [TOME, POOLING, FAILS]
    assert [r["compressor.name"] for r in rows] == ["tome", "pooling", "pooling"]
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    for r in rows[:2]:
        assert 0 <= float(r["val/mcq_acc"]) <= 1 and float(r["train/steps"]) > 0
        assert float(r["visual_tokens_per_video"]) == 16  # 4 frames x 4 tokens per frame, counted in validation
        assert float(r["peak_rss_mib"]) > 100 and r["peak_cuda_mib"] == ""
        assert float(r["train_time_s"]) > 0 and float(r["wall_time_s"]) >= float(r["train_time_s"])
        assert r["seed"] == "0" and r["error"] == ""
    failed = rows[2]
    assert failed["exit_code"] == "2" and "data.max_bad_fraction" in failed["error"]
    assert float(failed["peak_rss_mib"]) > 100 and failed["val/mcq_acc"] == ""  # the OS's figure for the process

    md = (out / "results.md").read_text()
    assert md.startswith("# Ablation `tiny-study`") and "torch " in md and "CPUs" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == ("| compressor.name | max_length | val/mcq_acc | val/loss | train s | peak RSS MiB | "
                        "visual tokens / video | status |")
    assert len(table) == 2 + 3
    assert table[2].startswith("| tome | (base) | 0.") and table[2].endswith("| 16 | ok |")
    assert "failed (exit 2): error:" in table[4] and "| — |" in table[4]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["val_loss.png", "val_mcq_acc.png"]
    assert (out / "plots" / "val_mcq_acc.png").read_bytes()[:4] == b"\x89PNG"

    lines = study["lines"]
    assert any(re.match(rf"\[1/3\] compressor.name=tome max_length=\(base\) \.\.\. done in \d+ s, val/mcq_acc 0\.\d+",
                        line) for line in lines), lines
    assert any(line.startswith("[3/3]") and "FAILED (exit code 2)" in line for line in lines)
    assert any("1 of 3 cells did not finish" in line for line in lines)
    cell = json.loads((out / "cells" / TOME / "cell.json").read_text())
    assert cell["status"] == "done" and len(cell["attempts"]) == 1
    assert "val MCQ accuracy" in (out / "cells" / TOME / "log.txt").read_text()  # the child's output, not ours


@pytest.mark.slow
def test_a_different_plan_into_the_same_folder_is_refused(study, capsys):
    args = ["ablate", str(study["path"]), "--out", str(study["out"]), *study["overrides"], "trainer.max_epochs=2"]
    assert main(args) == 2
    assert "holds the cells of a different plan" in capsys.readouterr().err


@pytest.mark.slow
def test_rerun_skips_finished_cells_resumes_and_retries(study):
    out = study["out"]
    os.remove(out / "cells" / TOME / "run" / "metrics.json")  # as if it stopped after its last checkpoint
    before = (out / "cells" / POOLING / "log.txt").stat()
    lines: list[str] = []
    assert ablate(study["path"], out=out, overrides=study["overrides"], echo=lines.append) == 1
    assert lines[0].startswith("ablation tiny-study: 3 cells (1 already done, 0 invalid, 2 to run)")
    after = (out / "cells" / POOLING / "log.txt").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # finished: not run again
    tome = json.loads((out / "cells" / TOME / "cell.json").read_text())
    assert tome["status"] == "done" and len(tome["attempts"]) == 2
    assert " --resume-if-exists " in tome["attempts"][1]["command"]  # the same command, which resumed
    assert "INFO lrc: resuming " in (out / "cells" / TOME / "log.txt").read_text()
    assert (out / "cells" / TOME / "run" / "metrics.json").is_file()
    failed = json.loads((out / "cells" / FAILS / "cell.json").read_text())
    assert failed["status"] == "failed" and len(failed["attempts"]) == 2  # failed cells are retried
    # the first attempt saved no checkpoint, so the retry started afresh and what it left was kept aside
    assert (out / "cells" / FAILS / "run" / "abandoned-1" / "skipped.json").is_file()


@pytest.mark.slow
def test_a_cell_whose_checkpoints_are_damaged_does_not_fail_forever(study):
    """A cell stopped by a kill in the middle of a save (before atomic writes: a truncated last.ckpt, the only
    checkpoint) used to be resumed, and to fail, on every re-run. Now the damaged file is put aside and the
    cell starts over."""
    out = study["out"]
    run = out / "cells" / POOLING / "run"
    os.remove(run / "metrics.json")
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        with open(ckpt, "r+b") as fh:
            fh.truncate(fh.seek(0, 2) // 3)
    lines: list[str] = []
    ablate(study["path"], out=out, overrides=study["overrides"], echo=lines.append)
    cell = json.loads((out / "cells" / POOLING / "cell.json").read_text())
    assert cell["status"] == "done", cell
    log = (out / "cells" / POOLING / "log.txt").read_text()
    assert "is truncated or damaged" in log and "No checkpoint of" in log and "starting the run over" in log
    assert (run / "metrics.json").is_file()
    assert list((run / "abandoned-1" / "checkpoints").glob("*.unusable"))  # kept, out of the way
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["status"] for r in rows] == ["done", "done", "failed"]


@pytest.mark.slow
def test_ctrl_c_is_passed_to_the_running_cell_which_saves(corpus, tmp_path):
    path = write(tmp_path / "long.yaml", f"ablation:\n  base: {DEMO}\n  grid: {{trainer.max_epochs: [200]}}\n")
    out = tmp_path / "out"
    cell_dir = out / "cells" / "max_epochs-200"
    overrides = [o for o in tiny_override_list(corpus, tmp_path) if not o.startswith("trainer.max_epochs=")]
    proc = subprocess.Popen([sys.executable, "-m", "lrc.cli", "ablate", str(path), "--out", str(out), "--verbose",
                             *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        # Lightning's CSV logger first writes its file after 100 steps (10 epochs here): training is under way
        while not (cell_dir / "run" / "logs" / "metrics.csv").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "the cell never started training"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # SIGTERM too is passed on: the cell saves and stops, then lrc ablate
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert f"Resume with: lrc ablate {path} --out {out} " in output
    assert f"INFO lrc: run dir: {cell_dir / 'run'}" in output  # --verbose: the cell's own output streamed too
    run = cell_dir / "run"
    assert (run / "interrupted.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "metrics.json").exists()
    cell = json.loads((cell_dir / "cell.json").read_text())
    assert cell["status"] == "interrupted" and cell["exit_code"] == 130
    assert "Resume with: lrc fit --resume" in cell["error"]
