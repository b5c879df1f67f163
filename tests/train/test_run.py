"""End to end: `lrc fit` trains and evaluates, writes its run dir; `lrc test` re-scores the checkpoint;
an unreadable video is skipped and reported, not fatal."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lrc.cli import main
from lrc.config import load_config, validate
from lrc.train.run import RunDirError, fit

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


@pytest.mark.slow
def test_fit_then_test_round_trip(tiny_overrides, tmp_path, capsys):
    run_dir = tmp_path / "run1"
    assert main(["fit", str(DEMO), "--out", str(run_dir), *tiny_overrides]) == 0
    assert "val MCQ accuracy" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/mcq_acc"] <= 1.0 and metrics["val/mcq_count"] > 0
    assert metrics["train/steps"] > 0 and metrics["data/skipped"] == 0
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["_lrc"]["plugins"]["model.compressor"]["origin"] == "lrc_plugins.compressors.tome:ToMeCompressor"
    assert resolved["model"]["compressor"]["tokens_per_frame"] == 4
    assert (run_dir / "logs" / "metrics.csv").exists()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists()

    # the run dir is never reused
    with pytest.raises(RunDirError):
        fit(load_config(DEMO, tiny_overrides), out=str(run_dir))

    # re-scoring the checkpoint reproduces the end-of-fit evaluation
    assert main(["test", str(DEMO), "--ckpt", str(ckpt), "--out", str(tmp_path / "eval"), *tiny_overrides]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["val/mcq_acc"] == pytest.approx(metrics["val/mcq_acc"])
    assert again["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-4)


@pytest.mark.slow
def test_unreadable_videos_are_skipped_counted_and_listed(corpus, tiny_overrides, tmp_path):
    salted = tmp_path / "salted"
    shutil.copytree(corpus, salted)
    records = [json.loads(l) for l in (salted / "train.jsonl").read_text().splitlines()]
    broken = {records[0]["video"], records[-1]["video"]}
    for rel in broken:
        (salted / rel).write_bytes(b"")  # zero bytes
    skipped_ids = {r["id"] for r in records if r["video"] in broken}
    # 2 of 10 training videos (20 % of the samples): above the default data.max_bad_fraction=0.05
    overrides = [o for o in tiny_overrides if not o.startswith("data.root=")] + [f"data.root={salted}",
                                                                                 "data.max_bad_fraction=0.5"]
    run_dir, metrics = fit(load_config(DEMO, overrides), out=str(tmp_path / "run"))
    report = json.loads((run_dir / "skipped.json").read_text())
    assert {r["id"] for r in report} == skipped_ids
    assert all(r["reason"] for r in report)
    assert metrics["data/skipped"] == len(skipped_ids)


def test_fit_on_missing_corpus_explains_what_to_do(tmp_path, capsys):
    code = main(["fit", str(DEMO), f"data.root={tmp_path / 'nothing'}", "data.synth_videos=null"])
    assert code == 2
    assert "data.synth_videos" in capsys.readouterr().err


def test_a_plugin_value_refused_when_building_is_a_config_error(tiny_overrides, capsys):
    """tome's head_dim must divide the encoder's width, which validation cannot know: exit 2 (a crash would raise)."""
    code = main(["fit", str(DEMO), *tiny_overrides, "model.compressor.head_dim=48"])
    assert code == 2
    err = capsys.readouterr().err
    assert "compressors plugin 'tome' (lrc_plugins.compressors.tome:ToMeCompressor, package lrc-video " in err
    assert "could not be built: tome: in_dim (64) is not divisible by head_dim (48)" in err
    assert "Traceback" not in err


def test_test_refuses_a_pickle_payload_checkpoint(tiny_overrides, tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    code = main(["test", str(DEMO), "--ckpt", str(evil), *tiny_overrides])
    captured = capsys.readouterr()
    assert code == 2 and "pwned" not in captured.out
    assert "weights_only" in captured.err


def test_test_checks_its_inputs_before_making_a_run_dir(tiny_overrides, tmp_path, capsys):
    """A bad config, a missing checkpoint or a checkpoint of another model: exit 2 and no run dir left behind."""
    import torch

    out = tmp_path / "eval"
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.encoder.not_this_model": torch.zeros(2)}}, other)
    cases = {"1 config problem": (other, ["data.batchsize=4"]),
             "nope.ckpt does not exist": (tmp_path / "nope.ckpt", []),
             "does not match this config's model": (other, [])}
    for message, (ckpt, extra) in cases.items():
        assert main(["test", str(DEMO), "--ckpt", str(ckpt), "--out", str(out), *tiny_overrides, *extra]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() and not (tmp_path / "runs").exists()


def test_the_corpus_seed_is_data_synth_seed_else_run_seed(tmp_path):
    """A study's seeds vary training, not the corpus: data.synth_seed fixes the synthesised videos."""
    from lrc.train.run import ensure_corpus

    seeds = {}
    for name, extra in (("fixed", ["data.synth_seed=5", "run.seed=1"]), ("by-run", ["data.synth_seed=null", "run.seed=5"])):
        cfg = validate(load_config(DEMO, [f"data.root={tmp_path / name}", "data.synth_videos=3", *extra]))
        ensure_corpus(cfg)
        seeds[name] = json.loads((tmp_path / name / "meta.json").read_text())["seed"]
    assert seeds == {"fixed": 5, "by-run": 5}
    demo = validate(load_config(DEMO))
    assert demo["data"]["synth_seed"] == 0  # the demo corpus whatever seed a study gives a cell
