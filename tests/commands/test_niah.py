"""Needle in a haystack (lrc/data/synth/needle.py, lrc/commands/niah.py): the haystack videos hold their needles where the
records say, the scorer is teacher-forced exact match, the memory cap stops the frame counts, and
`lrc niah` / `lrc fit` with niah.after_fit write their results."""

import json
from pathlib import Path

import numpy as np
import pytest

from lrc.cli import main
from lrc.config import ConfigError, check_niah, load_config, validate
from lrc.data.annotations import load_annotations
from lrc.data.synth.needle import MULTI_QUESTION, NEEDLE_BACKGROUND, SINGLE_QUESTION, grid_cell, grid_questions
from lrc.commands.niah import answer_exact_match, evaluate

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def decode(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def needle_mask(frames: np.ndarray) -> np.ndarray:
    """Frames whose background is the needle's light grey (haystack scenes are dark)."""
    corners = frames[:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(float).mean(axis=(1, 2))
    return np.abs(corners - NEEDLE_BACKGROUND) < 25


@pytest.mark.parametrize("depth,hops", [(0.0, 1), (0.5, 1), (1.0, 1), (0.25, 2)])
def test_haystack_has_its_needles_where_the_record_says(tmp_path, depth, hops):
    cell = grid_cell(tmp_path, 24, depth, hops, questions=2, needle_frames=4, seed=1, size=32, answer_style="text")
    records = load_annotations(cell)
    assert len(records) == 2
    # the same questions, drawn without rendering (what `lrc niah` checks before writing any video)
    drawn = grid_questions(24, depth, hops, 2, needle_frames=4, seed=1, size=32, answer_style="text")
    assert [(r.id, r.conversations, r.options, r.answer, r.extra["needle"]) for r in records] == [
        (name, q["conversations"], q["options"], q["answer"], q["needle"]) for name, q in drawn]
    for rec in records:
        needle = rec.extra["needle"]
        frames = decode(rec.video)
        assert frames.shape[0] == 24 and rec.duration == 24.0
        expected = np.zeros(24, dtype=bool)
        for start, end in needle["frames"]:
            assert end - start == 4 and start % 4 == 0
            expected[start:end] = True
        assert (needle_mask(frames) == expected).all()
        starts = [s for s, _ in needle["frames"]]
        # the first needle sits at the requested depth: 0 opens the video, 1 ends it
        assert starts[0] == int(np.floor(depth * (24 - 4) / 4 + 0.5)) * 4
        assert len(starts) == hops == len(set(starts))
        # the needle shows its colour; the answer is the needle's (single) or the earlier one's (multi) colour
        first = needle["colours"][int(np.argmin(starts))]
        assert rec.answer == first and first in rec.options and len(rec.options) == 4
        if hops == 2:
            assert set(needle["colours"]) <= set(rec.options)
        question = rec.conversations[0]["value"]
        assert (SINGLE_QUESTION if hops == 1 else MULTI_QUESTION) in question


def test_haystacks_are_deterministic_and_cached(tmp_path):
    a = grid_cell(tmp_path / "a", 16, 0.75, 2, 1, 4, seed=5, size=32, answer_style="letter")
    b = grid_cell(tmp_path / "b", 16, 0.75, 2, 1, 4, seed=5, size=32, answer_style="letter")
    assert a.read_text().replace("/a/", "/") == b.read_text().replace("/b/", "/")
    ra, rb = load_annotations(a)[0], load_annotations(b)[0]
    assert np.array_equal(decode(ra.video), decode(rb.video))
    # cached: asking again writes nothing
    stamp = ra.video.stat().st_mtime_ns
    assert grid_cell(tmp_path / "a", 16, 0.75, 2, 1, 4, seed=5, size=32, answer_style="letter") == a
    assert ra.video.stat().st_mtime_ns == stamp
    # a longer haystack starts with the same scenes (the stream of question q depends on (seed, q) only)
    longer = load_annotations(grid_cell(tmp_path / "a", 32, 0.0, 1, 1, 4, seed=5, size=32, answer_style="letter"))[0]
    short = load_annotations(grid_cell(tmp_path / "a", 16, 0.0, 1, 1, 4, seed=5, size=32, answer_style="letter"))[0]
    assert np.abs(decode(longer.video)[:12].astype(int) - decode(short.video)[:12].astype(int)).mean() < 3


def test_answer_exact_match_is_argmax_at_every_answer_position():
    import torch

    # sequence: prompt(0..2), answer tokens at 3 and 4, end-of-turn (id 9) at 5; position p is predicted at p-1
    labels = torch.tensor([[-100, -100, -100, 4, 7, 9]] * 3)
    logits = torch.zeros(3, 6, 10)
    logits[:, 2, 4] = 1.0  # predicts token 3 right in every row
    logits[0, 3, 7] = 1.0  # row 0: token 4 right too
    logits[1, 3, 6] = 1.0  # row 1: token 4 wrong
    logits[2, 3, 7] = 1.0  # row 2: right, but predicts 0 instead of the end-of-turn token
    logits[:2, 4, 9] = 1.0
    assert answer_exact_match(logits, labels, skip_ids=()) == [True, False, False]
    assert answer_exact_match(logits, labels, skip_ids=(9,)) == [True, False, True]


def test_niah_config_is_checked():
    cfg = validate(load_config(DEMO))
    assert check_niah(cfg) == [] and check_niah(cfg, running=True) == []
    # values one at a time: the schema (lrc/config/schema.py); the grid as a whole: check_niah
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["niah.depths=[0.5,1.5]", "niah.hops=[3]", "niah.memory_cap_gib=0"]))
    assert {p.split(": ")[1] for p in err.value.problems} == {"niah.depths", "niah.hops", "niah.memory_cap_gib"}
    problems = dict(check_niah({**cfg, "niah": {**cfg["niah"], "frame_counts": [16, 18], "hops": [1, 1],
                                                "depths": [], "size": 63}}))
    assert set(problems) == {"niah.depths", "niah.frame_counts", "niah.hops", "niah.size"}
    # the compressor's clip_len binds only where NIAH runs
    clip8 = {**cfg, "model": {**cfg["model"], "compressor": {**cfg["model"]["compressor"], "clip_len": 8}}}
    assert check_niah(clip8) == []
    assert {k for k, _ in check_niah(clip8, running=True)} == {"niah.needle_frames"}


# ---------------------------------------------------------------------------------------------
# With a tiny random model on a needle corpus (its tokenizer covers the NIAH questions)


@pytest.fixture(scope="module")
def needle_corpus(tmp_path_factory) -> Path:
    from lrc.data.synth import synthesize

    root = tmp_path_factory.mktemp("needle_corpus")
    synthesize(root, videos=6, seed=2, size=32, tasks="needle", answer_style="text")
    return root


@pytest.fixture
def niah_overrides(tiny_overrides, needle_corpus, tmp_path) -> list[str]:
    return [o for o in tiny_overrides if not o.startswith("data.root=")] + [
        f"data.root={needle_corpus}", "data.synth_answer_style=text", f"niah.root={tmp_path / 'niah'}",
        "niah.size=32", "niah.frame_counts=[16,96]", "niah.depths=[0,1]", "niah.questions_per_cell=2"]


def build_module(overrides):
    import lightning as L

    from lrc.train.build import build_model, build_module, build_tokenizer

    cfg = validate(load_config(DEMO, overrides))
    L.seed_everything(0, verbose=False)
    return cfg, build_module(cfg, build_model(cfg, build_tokenizer(cfg)))


def test_evaluate_scores_every_cell_by_hand_computed_argmax(niah_overrides, tmp_path):
    import torch

    from lrc.train.build import build_tokenizer
    from lrc.data.collate import collate
    from lrc.data.dataset import VideoConversationDataset
    from lrc.data.prompt import IM_END, PromptBuilder
    from lrc_plugins.samplers.uniform import UniformSampler

    cfg, module = build_module(niah_overrides)
    metrics = evaluate(cfg, module, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "niah.json").read_text())
    cells = report["cells"]
    assert len(cells) == 2 * 2 * 2  # frame counts x depths x hops
    assert {(c["frames"], c["depth"], c["hops"]) for c in cells} == {(f, d, h) for f in (16, 96) for d in (0.0, 1.0)
                                                                     for h in (1, 2)}
    for c in cells:
        assert c["questions"] == 2 and 0 <= c["acc"] <= 1 and 0 <= c["option_acc"] <= 1 and c["peak_gib"] > 0
    assert metrics["niah/max_frames_without_oom"] == 96
    for key in ("niah/acc_mean", "niah/acc_single", "niah/acc_multi", "niah/option_acc_mean"):
        assert 0 <= metrics[key] <= 1
    for name in ("niah_single.png", "niah_multi.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG

    # the same questions scored by hand: full-vocabulary argmax at each answer token, end-of-turn excluded
    tokenizer = build_tokenizer(cfg)
    prompts = PromptBuilder(tokenizer, module.model.tokens_per_frame)
    end = tokenizer.convert_tokens_to_ids(IM_END)
    enc = module.model.encoder
    for c in cells:
        cell = next((Path(cfg["niah"]["root"])).rglob(f"n{c['frames']}/d{c['depth']:g}-h{c['hops']}-q2.jsonl"))
        data = VideoConversationDataset(load_annotations(cell), UniformSampler(c["frames"]), prompts, enc.image_size,
                                        enc.mean, enc.std, max_length=10**9)
        right = 0
        for i in range(len(data)):
            batch = collate([data[i]], tokenizer.pad_token_id)
            assert batch["pixel_values"].shape[0] == c["frames"]  # one model frame per haystack frame
            with torch.inference_mode():
                out = module.model(batch)
            labels = out.labels[0].tolist()
            answer = [p for p, t in enumerate(labels) if t != -100 and t != end]
            right += all(int(out.logits[0, p - 1].argmax()) == labels[p] for p in answer)
        assert right == c["correct"]


def test_memory_cap_stops_at_the_first_frame_count_that_does_not_fit(niah_overrides, tmp_path):
    import subprocess
    import sys

    import torch

    # eager attention holds [heads, L, L] scores: 256 frames need clearly more memory than 16
    overrides = niah_overrides + ["model.llm.attn_implementation=eager", "niah.frame_counts=[16,256]",
                                  "niah.depths=[0]", "niah.hops=[1]", "niah.questions_per_cell=1"]
    _, module = build_module(overrides)
    ckpt = tmp_path / "w.pt"
    torch.save(module.state_dict(), ckpt)

    def niah(out: str, *extra: str) -> dict:
        # each in a fresh process: the resident set of this one depends on the tests run before
        done = subprocess.run([sys.executable, "-m", "lrc.cli", "niah", str(DEMO), "--ckpt", str(ckpt), "--out",
                               str(tmp_path / out), *overrides, *extra], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads((tmp_path / out / "niah.json").read_text())

    free = niah("free")
    peaks = {c["frames"]: c["peak_gib"] for c in free["cells"]}
    assert free["metrics"]["niah/max_frames_without_oom"] == 256 and peaks[256] - peaks[16] > 0.05
    capped = niah("capped", f"niah.memory_cap_gib={(peaks[16] + peaks[256]) / 2:.4f}")
    assert capped["metrics"]["niah/max_frames_without_oom"] == 16 and capped["oom_at_frames"] == 256
    assert [c["oom"] for c in capped["cells"]] == [False, True] and capped["cells"][0]["acc"] is not None
    assert (tmp_path / "capped" / "niah_single.png").read_bytes()[:8] == PNG
    # nothing fits under a cap below the process's own size; larger counts are not tried
    cfg = validate(load_config(DEMO, overrides + ["niah.memory_cap_gib=0.01"]))
    metrics = evaluate(cfg, module, tmp_path / "none")
    none = json.loads((tmp_path / "none" / "niah.json").read_text())
    assert metrics["niah/max_frames_without_oom"] == 0 and "niah/acc_mean" not in metrics
    assert none["oom_at_frames"] == 16 and [c["frames"] for c in none["cells"]] == [16]
    assert none["cells"][0]["oom"] and none["cells"][0]["acc"] is None


def test_cli_errors_exit_2(niah_overrides, tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    assert main(["niah", str(DEMO), "--ckpt", str(missing), "--out", str(tmp_path / "o1"), *niah_overrides]) == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"")
    assert main(["niah", str(DEMO), "--ckpt", str(ckpt), "--out", str(tmp_path / "o2"), *niah_overrides,
                 "niah.depths=[0,1.5]"]) == 2
    err = capsys.readouterr().err
    assert "command line: niah.depths" in err and "[0, 1]" in err
    # a checkpoint of another model (here: another vocabulary) is refused
    import torch

    from lrc.data.synth import synthesize

    synthesize(tmp_path / "mcq", videos=2, seed=0, size=32)
    plain = [o for o in niah_overrides if not o.startswith("data.root=")] + [f"data.root={tmp_path / 'mcq'}"]
    _, module = build_module(niah_overrides)
    torch.save(module.state_dict(), ckpt)
    assert main(["niah", str(DEMO), "--ckpt", str(ckpt), "--out", str(tmp_path / "o3"), *plain]) == 2
    assert "does not match this config's model" in capsys.readouterr().err
    # a model trained on a corpus without the needle task cannot read the questions: said before any
    # haystack video is written (the questions are drawn without rendering them)
    _, module = build_module(plain)
    torch.save(module.state_dict(), ckpt)
    assert main(["niah", str(DEMO), "--ckpt", str(ckpt), "--out", str(tmp_path / "o4"), *plain]) == 2
    assert "needle task" in capsys.readouterr().err
    # no run dir was made for any of them, and no haystack written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]
    assert not (tmp_path / "niah").exists()  # niah.root: where the haystacks would be


def test_problems_are_found_before_any_corpus_folder_or_video_is_written(tmp_path, capsys):
    """`lrc niah` checks the config, the grid and --out before synthesising a corpus (data.synth_videos)
    or writing a haystack; exit 2 and nothing on disk."""
    corpus, niah_root, out = tmp_path / "corpus", tmp_path / "niah", tmp_path / "out"
    overrides = [f"data.root={corpus}", "data.synth_videos=2", f"niah.root={niah_root}", "niah.size=32",
                 f"run.root={tmp_path / 'runs'}", "distributed.accelerator=cpu"]
    ckpt = tmp_path / "nope.ckpt"  # never read: the config is refused first
    assert main(["niah", str(DEMO), "--ckpt", str(ckpt), "--out", str(out), *overrides,
                 "model.compressor.clip_len=8", "data.sampler.num_frames=8", "niah.frame_counts=[16,20]"]) == 2
    assert "[20] not a multiple of model.compressor.clip_len=8" in capsys.readouterr().err
    # a taken --out is refused before the corpus is synthesised
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["niah", str(DEMO), "--ckpt", str(ckpt), "--out", str(out), *overrides]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    # so is a checkpoint file that is not there
    assert main(["niah", str(DEMO), "--ckpt", str(ckpt), "--out", str(tmp_path / "out2"), *overrides]) == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not list(tmp_path.rglob("*.mp4"))


@pytest.mark.slow
def test_fit_with_after_fit_adds_niah_metrics(niah_overrides, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["fit", str(DEMO), "--out", str(run_dir), *niah_overrides, "niah.after_fit=true",
                 "niah.frame_counts=[16]"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["niah/max_frames_without_oom"] == 16 and 0 <= metrics["niah/acc_mean"] <= 1
    assert "val/mcq_acc" in metrics
    assert (run_dir / "niah" / "niah.json").is_file() and (run_dir / "niah" / "niah_multi.png").is_file()
    # and `lrc niah` on its checkpoint gives the same figures
    out = tmp_path / "eval"
    assert main(["niah", str(DEMO), "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out),
                 *niah_overrides, "niah.frame_counts=[16]"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["niah/acc_mean"] == metrics["niah/acc_mean"]
    assert "heatmaps:" in capsys.readouterr().out
