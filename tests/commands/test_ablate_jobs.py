"""lrc ablate at scale and what it shows: cells in parallel (--jobs), cluster jobs through submitit (its local
executor stands in for slurm), progress and the estimate of the time left, and the plots' chance lines, value
labels, error bars and per-question-type panel."""

import csv
import json
import os
import re
import time
from pathlib import Path

import pytest

from lrc.cli import main
from lrc.commands.ablate import ablate
from lrc.commands.ablate.executors import cell_threads
from lrc.commands.ablate.plan import load_plan
from lrc.commands.ablate.progress import Progress, RunningCell
from lrc.commands.ablate.report import CellResult, chance_key, per_type_families, plot_results
from tests.conftest import DEMO, tiny_override_list


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Progress and the time left
# ---------------------------------------------------------------------------------------------
def progress_file(run_dir: Path, **values) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "progress.json").write_text(json.dumps(values))


def test_time_left_from_the_running_cells_own_progress_then_from_finished_cells(tmp_path):
    lines: list[str] = []
    progress = Progress(total=4, done=0, slots=2, echo=lines.append, every_s=1e-6)
    a, b = RunningCell("tome", tmp_path / "a"), RunningCell("pooling", tmp_path / "b")
    a.t0 = b.t0 = time.perf_counter() - 60  # both started a minute ago
    progress.started("a", a)
    progress.started("b", b)
    progress.waiting = 2
    assert progress.eta() is None and "left" not in progress.line()  # nothing to go on yet
    assert "tome: starting" in progress.line()
    # a: 100 of 400 steps in 50 s -> 150 s of training left; b has not reported: it takes as long as a projects
    # (60 s so far + 150 s), so 150 s more; the two waiting cells 210 s each; two cells run at a time
    progress_file(a.run_dir, stage="train", step=100, total_steps=400, first_step=0, train_elapsed_s=50.0)
    assert progress._left(a, None) == pytest.approx(150.0, abs=1)
    assert progress.eta() == pytest.approx((150 + 150 + 2 * 210) / 2, abs=2)
    assert "tome: step 100/400 (25 %)" in progress.line() and "2 waiting" in progress.line()
    # once cells finished, waiting ones take their mean wall time; the time outside training is counted too
    progress.ended("b", 100.0, finished=True, train_s=50.0)  # half of b's wall time was not training
    progress.waiting = 1
    assert progress._left(a, 100.0) == pytest.approx((50 + 150) / 0.5 - 60, abs=1)  # 200 s of training: 400 s
    assert progress.line().startswith("... 1/4 done, 1 running (tome: step 100/400 (25 %)), 1 waiting;")
    progress_file(a.run_dir, stage="trained", step=400, total_steps=400, first_step=0, train_elapsed_s=200.0)
    assert "tome: validating" in progress.line()
    progress.tick()
    assert lines and lines[-1].startswith("... 1/4 done")


def test_threads_are_the_cpus_shared_out():
    assert cell_threads(1, cpus=16) == 16 and cell_threads(3, cpus=16) == 5 and cell_threads(4, cpus=2) == 1


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def test_chance_keys_and_per_type_families():
    assert chance_key("val/mcq_acc") == "val/mcq_chance"
    assert chance_key("val/mcq_acc_colour") == "val/mcq_chance_colour"
    assert chance_key("val/loss") is None
    metrics = ["val/mcq_acc", "val/mcq_acc_colour", "val/mcq_acc_shape", "val/loss", "val/task_acc"]
    assert per_type_families(metrics) == {"val/mcq_acc": ["val/mcq_acc_colour", "val/mcq_acc_shape"]}


def figures(monkeypatch) -> dict[str, object]:
    """The figures plot_results saves, by file name, kept open for inspection."""
    import matplotlib.figure

    saved: dict[str, object] = {}
    real = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    monkeypatch.setattr("matplotlib.pyplot.close", lambda fig=None: None)
    return saved


def test_plots_draw_chance_values_error_bars_and_one_panel_per_type_family(tmp_path, monkeypatch):
    plan = load_plan(write(tmp_path / "s.yaml", f"""ablation:
  base: {DEMO}
  grid: {{model.compressor.name: [tome, pooling]}}
  seeds: [0, 1]
  metrics: [val/mcq_acc, val/mcq_acc_colour, val/mcq_acc_count]
"""))
    acc = {("tome", 0): 0.6, ("tome", 1): 0.8, ("pooling", 0): 0.4, ("pooling", 1): 0.5}
    results = [CellResult(c, "done", c.seed, metrics={
        "val/mcq_acc": acc[(c.varied["compressor.name"], c.seed)], "val/mcq_chance": 0.25,
        "val/mcq_acc_colour": 0.5, "val/mcq_chance_colour": 0.25,
        "val/mcq_acc_count": 0.7, "val/mcq_chance_count": 1 / 3}) for c in plan.cells]
    saved = figures(monkeypatch)
    paths = plot_results(plan, results, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["val_mcq_acc.png", "val_mcq_acc_by_type.png"]
    ax = saved["val_mcq_acc.png"].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.700", "0.450"]  # means over the two seeds, on the bars
    chance = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(0.25)
    assert ax.containers and any(c.__class__.__name__ == "ErrorbarContainer" for c in ax.containers)
    panel = saved["val_mcq_acc_by_type.png"].axes[0]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["colour", "count"]
    assert sorted(t.get_text() for t in panel.texts) == ["0.500", "0.500", "0.700", "0.700"]
    levels = sorted(round(float(seg[0][1]), 3) for c in panel.collections if c.get_gid() == "chance"
                    for seg in c.get_segments())
    assert levels == [0.25, 0.333]  # each type's own chance level across its group
    # without a chance level (a loss, or results from before the fit wrote one) there is no line
    plan.metrics = ["val/mcq_acc"]
    for r in results:
        del r.metrics["val/mcq_chance"]
    saved.clear()
    plot_results(plan, results, tmp_path / "plots2")
    assert not [line for line in saved["val_mcq_acc.png"].axes[0].lines if line.get_label().startswith("chance")]


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
STUDY = """ablation:
  name: tiny-jobs
  base: {base}
  grid:
    model.compressor.name: [tome, pooling]
  metrics: [val/mcq_acc, val/mcq_acc_colour, val/mcq_acc_shape]
{executor}"""


@pytest.mark.parametrize("block,argv,message", [
    ("  executor: {slurm: {partitoin: gpu}}\n", ["--executor", "slurm"],
     "ablation.executor.slurm.partitoin: not a parameter of submitit's slurm executor. Did you mean 'partition'"),
    ("  executor: {slrum: {partition: gpu}}\n", [], "ablation.executor: expected a mapping with a block per executor"),
    ("", ["--jobs", "0"], "--jobs 0: run at least one cell at a time"),
])
def test_bad_executor_settings_are_errors_before_anything_runs(tmp_path, capsys, block, argv, message):
    path = write(tmp_path / "s.yaml", STUDY.format(base=DEMO, executor=block))
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Real studies: two tiny fits at once, as child processes and as submitit jobs
# ---------------------------------------------------------------------------------------------
def expected_chance(corpus: Path) -> float:
    records = [json.loads(line) for line in (corpus / "val.jsonl").read_text().splitlines() if line.strip()]
    shares = [1 / len(r["options"]) for r in records if r.get("options")]
    return sum(shares) / len(shares)


@pytest.mark.slow
def test_jobs_run_cells_at_once_with_their_share_of_threads_and_resume(corpus, tmp_path):
    path = write(tmp_path / "s.yaml", STUDY.format(base=DEMO, executor=""))
    overrides = tiny_override_list(corpus, tmp_path)
    out = tmp_path / "out"
    lines: list[str] = []
    assert ablate(path, out=out, overrides=overrides, echo=lines.append, jobs=2, progress_every=1) == 0
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"running up to 2 cells at a time as child processes, {threads} thread" in "\n".join(lines)
    starts = [i for i, line in enumerate(lines) if line.endswith(")") and " ... running (log:" in line]
    ends = [i for i, line in enumerate(lines) if " ... done in " in line]
    assert len(starts) == 2 and len(ends) == 2 and max(starts) < min(ends)  # both started before either ended
    assert any(re.match(r"\.\.\. 0/2 done, 2 running \(", line) for line in lines), lines
    for slug in ("compressor.name-tome", "compressor.name-pooling"):
        attempt = json.loads((out / "cells" / slug / "cell.json").read_text())["attempts"][-1]
        assert attempt["threads"] == threads and attempt["exit_code"] == 0
        assert attempt["command"].endswith(f" run.threads={threads}")  # on the command line, not in the plan
        progress = json.loads((out / "cells" / slug / "run" / "progress.json").read_text())
        assert progress["stage"] == "trained" and progress["step"] == progress["total_steps"] > 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["status"] for r in rows] == ["done", "done"]
    assert float(rows[0]["val/mcq_chance"]) == pytest.approx(expected_chance(corpus))
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["val_mcq_acc.png", "val_mcq_acc_by_type.png"]
    # the same cells with another --jobs resume into the same folder: nothing to run again
    again: list[str] = []
    assert ablate(path, out=out, overrides=overrides, echo=again.append, jobs=1) == 0
    assert again[0].startswith("ablation tiny-jobs: 2 cells (2 already done, 0 invalid, 0 to run)")


@pytest.mark.slow
def test_submitit_local_executor_runs_each_cell_as_a_job(corpus, tmp_path):
    pytest.importorskip("submitit")
    path = write(tmp_path / "s.yaml", STUDY.format(base=DEMO, executor="  executor: {local: {timeout_min: 20}}\n"))
    overrides = tiny_override_list(corpus, tmp_path)
    out = tmp_path / "out"
    lines: list[str] = []
    assert ablate(path, out=out, overrides=overrides, echo=lines.append, executor="local", progress_every=0) == 0
    assert any("as local jobs (submitit)" in line for line in lines), lines
    for slug in ("compressor.name-tome", "compressor.name-pooling"):
        cell = json.loads((out / "cells" / slug / "cell.json").read_text())
        attempt = cell["attempts"][-1]
        assert cell["status"] == "done" and attempt["executor"] == "local" and attempt["job_id"]
        assert attempt["peak_rss_mib"] > 100  # the job's own wait4 of the fit
        log = (out / "cells" / slug / "log.txt").read_text()
        assert log.startswith("\n=== ") and "val MCQ accuracy" in log  # the fit's output, in the cell's log
        assert (out / "submitit" / f"{attempt['job_id']}_0_log.out").is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["status"] for r in rows] == ["done", "done"] and float(rows[0]["val/mcq_acc"]) >= 0
    # resumable like any study: a re-run (any executor) finds both cells finished
    again: list[str] = []
    assert ablate(path, out=out, overrides=overrides, echo=again.append) == 0
    assert again[0].startswith("ablation tiny-jobs: 2 cells (2 already done")


def test_the_slurm_block_becomes_the_jobs_sbatch_settings(tmp_path, monkeypatch):
    """No cluster here: the sbatch script submitit would submit is read instead (submitit only looks for `srun`)."""
    pytest.importorskip("submitit")
    from lrc.commands.ablate.executors import SubmititLauncher

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write(bin_dir / "srun", "#!/bin/sh\nexit 1\n").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    block = {"partition": "gpu", "timeout_min": 90, "gpus_per_node": 1, "cpus_per_task": 4, "account": "lab"}
    launcher = SubmititLauncher("slurm", tmp_path / "submitit", block, "study", jobs=None)
    launcher.share(8)
    assert launcher.threads == 4  # the CPUs each job asks for, not this machine's share
    script = launcher.executor._executor._make_submission_file_text("python -m lrc.cli fit ...", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=4", "--account=lab",
                 "--signal=USR2@"):
        assert f"#SBATCH {line}" in script, script


@pytest.mark.slow
def test_a_job_warned_of_its_end_saves_and_is_requeued_to_resume(corpus, tmp_path):
    """submitit's end-of-time (or preemption) signal, USR2, reaches the job: the fit saves a checkpoint and
    stops, submitit requeues the job, and the requeued job's fit resumes from that checkpoint."""
    submitit = pytest.importorskip("submitit")
    import signal

    from lrc.commands.ablate.executors import CellJob

    overrides = [o for o in tiny_override_list(corpus, tmp_path) if not o.startswith("trainer.max_epochs=")]
    run = tmp_path / "run"
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="local")
    executor.update_parameters(timeout_min=20)
    job = executor.submit(CellJob(["fit", str(DEMO), "--out", str(run), "--resume-if-exists", *overrides,
                                   "trainer.max_epochs=30"], str(tmp_path / "log.txt"), {"OMP_NUM_THREADS": "1"}))

    def step() -> int:
        try:
            return json.loads((run / "progress.json").read_text())["step"]
        except (OSError, ValueError):
            return -1

    deadline = time.monotonic() + 300
    while step() < 20:  # training is under way (300 steps in all)
        assert time.monotonic() < deadline and not job.done(), "the fit never got going"
        time.sleep(0.2)
    fit = json.loads((run / "lrc.lock").read_text())["pid"]
    worker = int(Path(f"/proc/{fit}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the job: the fit's parent
    os.kill(worker, signal.SIGUSR2)  # what submitit's controller (or slurm's --signal) sends before the end
    assert job.result()["exit_code"] == 0
    log = (tmp_path / "log.txt").read_text()
    assert log.count("\n=== ") == 2  # two runs of the same command: the requeued one resumed
    assert "INFO lrc: resuming " in log and (run / "metrics.json").is_file()
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 300
