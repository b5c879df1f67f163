"""lrc.load(PATH).chat, `lrc chat` and `lrc infer` end to end on a tiny trained run (real MP4s, a short fit)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lrc
from lrc.cli import main
from lrc.inference.chat import InferenceError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny demo run: one epoch on 12 synthetic videos."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_override_list
    from lrc.data.synth import synthesize

    tmp = tmp_path_factory.mktemp("chat")
    corpus = tmp / "corpus"
    synthesize(corpus, videos=12, seed=3, size=32, min_seconds=3.0, max_seconds=8.0)
    assert main(["fit", str(DEMO), "--out", str(tmp / "run"), *tiny_override_list(corpus, tmp)]) == 0
    return tmp / "run", corpus


def first_record(corpus: Path) -> dict:
    return json.loads((corpus / "val.jsonl").read_text().splitlines()[0])


@pytest.mark.slow
def test_load_and_chat_answer_as_the_trained_model_scores(run):
    """The answer's first token is the one the training path's forward ranks first where the answer begins
    (the same prompt, video and weights), and the text is the decoded answer."""
    from lrc.train.build import build_data

    run_dir, corpus = run
    chat = lrc.load(run_dir)
    assert chat.model.training is False and "chatml" in repr(chat)
    rec = first_record(corpus)
    question = rec["conversations"][0]["value"]
    result = chat.chat(corpus / rec["video"], question, max_new_tokens=6)
    assert result.text == chat.tokenizer.decode(result.token_ids, skip_special_tokens=True).strip()
    assert len(result.timestamps) == 4 and result.duration > 0 and result.history == [(question, result.text)]
    data = build_data(chat.cfg, chat.tokenizer, chat.model)
    data.setup("validate")
    ds = data.dataset("val")
    item = next(ds[i] for i in range(len(ds)) if ds.records[i].id == rec["id"])
    batch = data.collate([item])
    with torch.no_grad():
        logits = chat.model(batch).logits[0, int(batch["answer_start"][0]) - 1]
    assert result.token_ids[0] == int(logits.argmax())
    # a follow-up turn keeps the conversation; the video is encoded once
    again = chat.chat(corpus / rec["video"], "And the shape?", result.history, max_new_tokens=3)
    assert [q for q, _ in again.history] == [question, "And the shape?"]


@pytest.mark.slow
def test_chat_takes_decoded_frames_and_refuses_bad_requests(run):
    run_dir, corpus = run
    chat = lrc.load(run_dir)
    frames = np.random.default_rng(0).integers(0, 255, (12, 40, 48, 3), dtype=np.uint8)
    result = chat.chat(frames, "What colour is the square?", fps=4.0, max_new_tokens=2)
    assert len(result.timestamps) == 4 and result.duration == pytest.approx(3.0)
    with pytest.raises(InferenceError, match="at least one frame"):
        chat.chat(frames, "x", num_frames=0)
    assert len(chat.chat(frames, "x", fps=4.0, num_frames=6, max_new_tokens=1).timestamps) == 6  # a partial clip
    with pytest.raises(InferenceError, match="does not exist"):
        chat.chat(corpus / "nope.mp4", "x")
    with pytest.raises(InferenceError, match=r"\[N, H, W, 3\]"):
        chat.chat(np.zeros((4, 8, 8)), "x")
    assert len(chat.chat(corpus / first_record(corpus)["video"], "Colour?", num_frames=8,
                         max_new_tokens=1).timestamps) == 8


@pytest.mark.slow
def test_lrc_chat_answers_once_and_as_a_repl(run, tmp_path, capsys, monkeypatch):
    run_dir, corpus = run
    video = corpus / first_record(corpus)["video"]
    assert main(["chat", str(run_dir), "--video", str(video), "--question", "What colour is the square?",
                 "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip() == lrc.load(run_dir).chat(video, "What colour is the square?",
                                                                      max_new_tokens=4).text
    monkeypatch.setattr(sys, "stdin", io.StringIO("What colour is the square?\nAnd the circle?\nexit\n"))
    assert main(["chat", str(run_dir), "--video", str(video), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("> ") == 3 and "VideoChat(" in out
    assert main(["chat", str(run_dir), "--video", str(tmp_path / "missing.mp4"), "--question", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_lrc_infer_writes_every_record_and_resumes(run, tmp_path, capsys):
    run_dir, corpus = run
    out = tmp_path / "pred.jsonl"
    val = corpus / "val.jsonl"
    n = len(val.read_text().splitlines())
    assert main(["infer", str(run_dir), "--data", str(val), "--out", str(out), "--limit", "3", "--no-progress",
                 "--max-new-tokens", "3"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(line["prediction"] is not None and "answer" in line for line in lines)
    assert all(isinstance(line["correct"], bool) for line in lines if line["task"] == "mcq")
    with out.open("a") as fh:  # a run killed in the middle of a line
        fh.write('{"id": "half')
    assert main(["infer", str(run_dir), "--data", str(val), "--out", str(out), "--no-progress",
                 "--max-new-tokens", "3"]) == 0
    assert f"{n - 3} prediction(s) written" in capsys.readouterr().out
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == n == len(set(ids))
    assert main(["infer", str(run_dir), "--data", str(val), "--out", str(out), "--no-progress"]) == 0
    assert "0 prediction(s) written" in capsys.readouterr().out


def test_import_lrc_stays_light():
    import subprocess

    code = "import sys, lrc; assert 'torch' not in sys.modules; assert callable(lrc.load); print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
