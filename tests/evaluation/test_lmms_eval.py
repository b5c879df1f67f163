"""The lmms-eval adapter (lrc/integrations/lmms_eval.py) through lmms-eval's own evaluator and command line, on a
tiny local task (a JSON-lines file and synthetic videos; nothing downloaded)."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the optional extra lrc-video[eval]")

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

UTILS = '''
import string


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    options = "\\n".join(f"({string.ascii_uppercase[i]}) {o}" for i, o in enumerate(doc["options"]))
    return f"Question: {doc['question']}\\nOptions:\\n{options}\\nOnly give the best option."


def doc_to_choice(doc):
    return doc["options"]


def doc_to_target(doc):
    return doc["options"].index(doc["text"])


def process_results(doc, results):
    said = results[0].strip()
    return {"acc": float(said[:1] == doc["answer"] or said.lower() == doc["text"].lower())}
'''


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """Two local tasks over the synthetic MVBench-format set: free answers (generate_until) and option
    likelihoods (multiple_choice -> loglikelihood)."""
    from lrc.data.synth.bench import synthesize_mvbench
    from lrc.evaluation import get

    tmp = tmp_path_factory.mktemp("lmms-task")
    synthesize_mvbench(tmp / "data", videos=2, size=32)
    docs = tmp / "docs.jsonl"
    with docs.open("w") as fh:
        for item in get("mvbench").read(tmp / "data"):
            fh.write(json.dumps({"video": str(item.video), "question": item.question, "options": item.options,
                                 "answer": item.answer, "text": item.options["ABCD".index(item.answer)]}) + "\n")
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(UTILS)
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {docs}\ntest_split: test\n"
              "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n")
    (tasks / "lrc_local_mcq.yaml").write_text(
        "task: lrc_local_mcq\noutput_type: generate_until\n" + common + textwrap.dedent("""\
            doc_to_target: answer
            generation_kwargs:
              max_new_tokens: 4
              do_sample: false
            process_results: !function utils.process_results
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
        """))
    (tasks / "lrc_local_choice.yaml").write_text(
        "task: lrc_local_choice\noutput_type: multiple_choice\n" + common + textwrap.dedent("""\
            doc_to_choice: !function utils.doc_to_choice
            doc_to_target: !function utils.doc_to_target
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
        """))
    return tasks


def _yaml_ok(tasks: Path) -> None:
    import yaml

    for path in tasks.glob("*.yaml"):
        text = path.read_text().replace("!function ", "")
        assert yaml.safe_load(text)["dataset_path"] == "json", path


@pytest.mark.slow
def test_simple_evaluate_runs_the_lrc_model_on_a_local_task(tiny_run, task_dir, monkeypatch):
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    _yaml_ok(task_dir)
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    import lrc
    from lrc.integrations.lmms_eval import continuation_logprob, register

    register()
    spec = importlib.util.spec_from_file_location("lrc_task_utils", task_dir / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)  # the task's own doc_to_text: the prompt lmms-eval sent
    results = evaluator.simple_evaluate(model="lrc", model_args=f"path={tiny_run},num_frames=4,device=cpu",
                                        tasks=["lrc_local_mcq", "lrc_local_choice"], batch_size=1,
                                        task_manager=TaskManager(include_path=str(task_dir)), log_samples=True)
    assert set(results["results"]) >= {"lrc_local_mcq", "lrc_local_choice"}
    chat = lrc.load(tiny_run, device="cpu")
    generated = results["samples"]["lrc_local_mcq"]
    assert len(generated) == 8
    for sample in generated:  # what lmms-eval recorded is lrc's answer to the task's prompt
        doc = sample["doc"]
        answer = chat.chat(doc["video"], utils.doc_to_text(doc), num_frames=4, max_new_tokens=4).text
        assert sample["resps"][0][0] == answer
    mean = sum(s["acc"] for s in generated) / len(generated)
    assert results["results"]["lrc_local_mcq"]["acc,none"] == pytest.approx(mean)
    choices = results["samples"]["lrc_local_choice"]
    right = 0
    for sample in choices:  # loglikelihood: each option's loss after the prompt (lmms-eval's argmin), greedy or not
        doc = sample["doc"]
        scores = [continuation_logprob(chat, doc["video"], utils.doc_to_text(doc), f" {o}", 4) for o in doc["options"]]
        assert [r[0] for r in sample["resps"]] == [pytest.approx([-lp, greedy], abs=1e-4) for lp, greedy in scores]
        right += max(range(len(scores)), key=lambda i: scores[i][0]) == doc["options"].index(doc["text"])
    assert results["results"]["lrc_local_choice"]["acc,none"] == pytest.approx(right / len(choices))


@pytest.mark.slow
def test_the_documented_command_line_runs_lmms_eval_with_lrc(tiny_run, task_dir, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "lrc.integrations.lmms_eval", "--model", "lrc", "--model_args",
         f"path={tiny_run},num_frames=4,device=cpu", "--tasks", "lrc_local_mcq", "--include_path", str(task_dir),
         "--batch_size", "1", "--output_path", str(out)],
        env={**os.environ, **OFFLINE}, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = list(out.rglob("*results*.json"))
    assert found, sorted(str(p) for p in out.rglob("*"))
    doc = json.loads(found[0].read_text())
    assert "lrc_local_mcq" in doc["results"] and doc["config"]["model"] == "lrc"
