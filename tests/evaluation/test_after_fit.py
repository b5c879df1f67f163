"""eval.after_fit: `lrc fit` runs the config's benchmarks on the weights it just trained, their eval/* figures join the
run's metrics.json, and `lrc ablate` shows them as columns beside the training cost."""

import csv
import json

import pytest

from lrc.cli import main
from lrc.config import ConfigError, load_config, validate
from tests.conftest import DEMO, tiny_override_list


def test_eval_benches_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["eval.after_fit=true"]))
    assert "eval.benches: eval.after_fit needs at least one benchmark" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["eval.after_fit=true", f"eval.benches=[{{name: mlvu, data: {tmp_path / 'no'}, "
                                                           "subtitles: true}, {name: videomme}]"]))
    text = str(err.value)
    assert f"eval.benches: item 0: data: {tmp_path / 'no'} does not exist" in text
    assert "eval.benches: item 0: subtitles: only videomme has a with-subtitles setting" in text
    assert "eval.benches: item 1: data: required" in text
    with pytest.raises(ConfigError, match=r"eval.benches: item 0: name: 'mmbench' .* Did you mean 'mvbench'"):
        validate(load_config(DEMO, ["eval.benches=[{name: mmbench, data: x}]"]))
    # without after_fit a missing folder is not an error (lrc eval says so when it runs)
    cfg = validate(load_config(DEMO, [f"eval.benches=[{{name: mvbench, data: {tmp_path / 'later'}}}]"]))
    assert cfg["eval"]["benches"][0] == {"name": "mvbench", "data": str(tmp_path / "later"), "limit": None,
                                         "num_frames": None, "sampler": "uniform", "subtitles": False,
                                         "max_new_tokens": None, "synth_videos": None}


@pytest.mark.slow
def test_an_ablation_shows_benchmark_accuracy_beside_training_cost(corpus, tmp_path, capsys):
    bench_dir = tmp_path / "synth-mvbench"  # written by the first fit (synth_videos), read by `lrc eval` alike
    experiment = tmp_path / "with_eval.yaml"
    experiment.write_text(f"base: [{DEMO}]\neval:\n  after_fit: true\n  benches:\n"
                          f"    - {{name: mvbench, data: {bench_dir}, synth_videos: 3, num_frames: 4, limit: 6}}\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"ablation:\n  name: eval-column\n  cells:\n    - {{base: {experiment}, label: tome}}\n"
                     "  metrics: [eval/mvbench/acc, eval/mvbench/mean_acc, val/mcq_acc]\n")
    out = tmp_path / "out"
    assert main(["ablate", str(study), "--out", str(out), *tiny_override_list(corpus, tmp_path)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 1 and rows[0]["status"] == "done"
    accuracy = float(rows[0]["eval/mvbench/acc"])
    assert 0 <= accuracy <= 1 and float(rows[0]["train_time_s"]) > 0
    header = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("|"))
    assert header.startswith("| label | eval/mvbench/acc | eval/mvbench/mean_acc | val/mcq_acc | train s |")
    run_dir = next((out / "cells").iterdir()) / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval/mvbench/acc"] == accuracy and "eval/mvbench/task/moving_count" in metrics
    results = run_dir / "eval" / "mvbench" / "results.json"
    assert json.loads(results.read_text())["counts"]["items"] == 6 and (run_dir / "eval" / "metrics.json").is_file()
    assert not list(run_dir.glob("eval-weights.pt"))  # the weights handed to the evaluation are removed
    # `lrc eval RUN_DIR` (the run's own eval.benches, its last checkpoint) gives the same figures
    again = tmp_path / "again"
    assert main(["eval", str(run_dir), "--out", str(again), "--no-progress"]) == 0
    assert json.loads((again / "metrics.json").read_text())["eval/mvbench/acc"] == accuracy
    assert "mvbench: accuracy" in capsys.readouterr().out
