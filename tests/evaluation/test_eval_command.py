"""`lrc eval` end to end on a tiny trained run: the synthetic MVBench-format set, every benchmark's fixture through
the real model, resuming, and two ranks sharing a benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lrc
from lrc.cli import main
from lrc.evaluation import get
from lrc.evaluation.runner import Settings, run, sample_video
from lrc.registry import SAMPLERS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chat(tiny_run):
    return lrc.load(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "mvbench"
    assert main(["data", "synth", str(out), "--bench", "mvbench", "--videos", "4", "--size", "32"]) == 0
    return out


def predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("predictions*.jsonl"))
            for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_lrc_eval_writes_results_per_task_a_table_and_a_plot(tiny_run, synthetic, chat, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", str(tiny_run), "--bench", "mvbench", "--data", str(synthetic), "--out", str(out),
                 "--num-frames", "4", "--no-progress"]) == 0
    assert "mvbench: accuracy" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    lines = results["predictions"]
    assert len(lines) == 16 and results["settings"]["num_frames"] == 4 and results["benchmark"] == "mvbench"
    for line in lines:  # every answer read by the one extraction, scored against the item's letter
        assert line["correct"] == (line["choice"] == line["answer"]) and "prediction" in line
    tasks = results["breakdown"]["task"]
    assert set(tasks) == {"moving_attribute", "moving_direction", "moving_count"}
    assert tasks["moving_attribute"]["total"] == 8
    assert results["overall"]["acc"] == round(sum(x["correct"] for x in lines) / 16, 4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval/mvbench/acc"] == results["overall"]["acc"]
    assert set(metrics) >= {"eval/mvbench/mean_acc", "eval/mvbench/task/moving_count", "eval/mvbench/unparsed"}
    table = (out / "results.md").read_text()
    assert "| moving_direction | 4 |" in table and "![mvbench](results.png)" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the recorded answer is the model's answer to the benchmark's prompt about the sampled frames
    bench = get("mvbench")
    item = bench.read(synthetic)[0]
    video = sample_video(item, SAMPLERS.get("uniform")(num_frames=4), chat.model.encoder.image_size, 30.0)
    again = chat.chat(video, bench.prompt(item), max_new_tokens=16).text
    assert next(x for x in lines if x["id"] == item.id)["prediction"] == again


@pytest.mark.slow
def test_eval_resumes_and_refuses_other_settings(tiny_run, synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["eval", str(tiny_run), "--bench", "mvbench", "--data", str(synthetic), "--out", str(out),
              "--num-frames", "4", "--no-progress"]
    assert main([*common, "--limit", "5"]) == 0
    first = predictions(out)
    assert len(first) == 5 and len({x["category"] for x in first}) == 3  # the limit draws from every task
    with (out / "predictions.jsonl").open("a") as fh:  # a kill in the middle of a line
        fh.write('{"id": "moving_count/3", "predi')
    assert main(common) == 0
    lines = predictions(out)
    assert len(lines) == 16 == len({x["id"] for x in lines})
    assert lines[:5] == first  # kept, not asked again
    assert json.loads((out / "results.json").read_text())["counts"]["items"] == 16
    capsys.readouterr()
    assert main([*common[:-3], "--num-frames", "8", "--no-progress"]) == 2
    assert "other settings (num_frames: 4 there, 8 now)" in capsys.readouterr().err
    assert main([*common, "--restart", "--limit", "2"]) == 0
    assert len(predictions(out)) == 2


@pytest.mark.slow
def test_two_ranks_share_the_benchmark_and_rank_zero_merges(tiny_run, synthetic, chat, tmp_path):
    single = tmp_path / "single"
    run(chat, get("mvbench"), synthetic, single, Settings(num_frames=4), progress=False)
    out = tmp_path / "ranked"
    argv = [sys.executable, "-m", "lrc.cli", "eval", str(tiny_run), "--bench", "mvbench", "--data", str(synthetic),
            "--out", str(out), "--num-frames", "4", "--no-progress", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [subprocess.Popen(argv, env={**env, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT) for r in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    items = [i.id for i in get("mvbench").read(synthetic)]
    for rank in (0, 1):  # each rank wrote its own share: items r, r + 2, r + 4 ...
        mine = [json.loads(x)["id"] for x in (out / f"predictions.rank{rank}.jsonl").read_text().splitlines()]
        assert mine == items[rank::2]
    assert "mvbench: accuracy" in outputs[0] and "mvbench: accuracy" not in outputs[1]  # rank 0 reports
    merged = json.loads((out / "results.json").read_text())
    alone = json.loads((single / "results.json").read_text())
    assert [x["id"] for x in merged["predictions"]] == items
    assert [x["prediction"] for x in merged["predictions"]] == [x["prediction"] for x in alone["predictions"]]
    assert merged["overall"] == alone["overall"]


@pytest.mark.slow
@pytest.mark.parametrize("name,subtitles", [("mvbench", False), ("videomme", False), ("videomme", True),
                                            ("longvideobench", False), ("mlvu", False), ("charades_sta", False)])
def test_every_benchmark_runs_through_the_model(chat, benches, tmp_path, name, subtitles):
    bench = get(name)
    result = run(chat, bench, benches[name], tmp_path / name, Settings(num_frames=4, subtitles=subtitles),
                 model="tiny", progress=False)
    doc = json.loads((tmp_path / name / "results.json").read_text())
    items = bench.read(benches[name], subtitles)
    assert [x["id"] for x in doc["predictions"]] == [i.id for i in items]
    assert all("prediction" in x and "error" not in x and x["frames"] == 4 for x in doc["predictions"])
    assert doc["benchmark"] == bench.label(subtitles) and result.merged
    if bench.kind == "grounding":
        assert set(doc["overall"]["text"]) >= {"r1@0.3", "r1@0.5", "r1@0.7", "miou"}
        assert "no temporal head output" in (tmp_path / name / "results.md").read_text()
        assert "eval/charades_sta/miou" in result.metrics
    else:
        assert doc["overall"]["total"] == len(items) and f"eval/{bench.label(subtitles)}/acc" in result.metrics


@pytest.mark.slow
def test_an_unreadable_video_is_counted_not_fatal(chat, benches, tmp_path):
    from tests.evaluation.conftest import write_json

    data = tmp_path / "mvbench"
    write_json(data / "json/moving_count.json", [
        {"video": "video_10000.mp4", "question": "How many?", "candidates": ["1", "2"], "answer": "2"},
        {"video": "missing.mp4", "question": "How many?", "candidates": ["1", "2"], "answer": "1"}])
    (data / "clevrer/video_validation").mkdir(parents=True)
    (data / "clevrer/video_validation/video_10000.mp4").symlink_to(
        benches["mvbench"] / "clevrer/video_validation/video_10000.mp4")
    result = run(chat, get("mvbench"), data, tmp_path / "out", Settings(num_frames=4), progress=False)
    assert result.summary["overall"]["errors"] == 1 and result.summary["overall"]["total"] == 2
    line = json.loads((tmp_path / "out/results.json").read_text())["predictions"][1]
    assert "does not exist" in line["error"] and line["correct"] is False
    assert "1 item(s) could not be asked" in (tmp_path / "out/results.md").read_text()
