"""`lrc export`: a run becomes a self-contained folder that reloads with lrc and (its LLM) with transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lrc.train.build import build_model, build_tokenizer
from lrc.cli import main
from lrc.config import load_config, validate
from lrc.commands.export import load_exported

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


def fake_run(overrides: list[str], run_dir: Path):
    """A run dir as `lrc fit` leaves it: config.yaml (with provenance) and checkpoints/last.ckpt, with
    "trained" weights (LoRA adapters non-zero, so merging them matters)."""
    from lrc.train.run import write_resolved_config

    loaded = load_config(DEMO, overrides)
    cfg = validate(loaded)
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    (run_dir / "checkpoints").mkdir(parents=True)
    write_resolved_config(run_dir, cfg, loaded)
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 1, "global_step": 10}, run_dir / "checkpoints" / "last.ckpt")
    return cfg, tok, model


def test_export_reloads_with_lrc_and_transformers(tiny_overrides, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = tmp_path / "run"
    _, tok, model = fake_run(tiny_overrides + ["model.llm.lora={r: 4}", "model.heads.region={name: region}"], run_dir)
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0

    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"config.yaml", "model.safetensors", "manifest.json", "README.md", "tokenizer/tokenizer_config.json",
            "llm/config.json", "llm/model.safetensors"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".ckpt", ".pkl"))]  # never pickle
    manifest = json.loads((out / "manifest.json").read_text())
    from importlib import metadata

    assert manifest["versions"]["torch"] == metadata.version("torch")
    assert {"lrc", "transformers", "peft", "python"} <= set(manifest["versions"])
    assert manifest["files"]["model.safetensors"]["sha256"] and manifest["llm_transformers_folder"] == "llm"

    # lrc: the same weights, wherever the folder is moved to
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    _, tok2, reloaded = load_exported(moved)
    assert len(tok2) == len(tok)
    expected = model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, expected[key]), key

    # transformers: the LLM alone, LoRA merged, gives the lrc LLM's logits
    ids = torch.tensor([[1, 4, 9, 16, 25, 3]])
    hf = AutoModelForCausalLM.from_pretrained(moved / "llm").eval()
    assert len(AutoTokenizer.from_pretrained(moved / "llm")) == len(tok)
    with torch.no_grad():
        ours = model.llm(inputs_embeds=model.llm.embed(ids)).logits
        theirs = hf(input_ids=ids).logits
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
        with model.llm.model.disable_adapter():  # the adapters were merged in, not dropped
            assert not torch.allclose(theirs, model.llm(inputs_embeds=model.llm.embed(ids)).logits, atol=1e-4)


def test_export_replaces_outside_weight_folders_by_their_architecture(tiny_overrides, tmp_path):
    """A run built from `pretrained` folders exports a config that no longer needs them."""
    from transformers import InternVLVisionConfig, InternVLVisionModel

    cfg0 = validate(load_config(DEMO, tiny_overrides))
    tok = build_tokenizer(cfg0)
    torch.manual_seed(0)
    base = build_model(cfg0, tok)
    llm_dir, vit_dir = tmp_path / "llm-src", tmp_path / "vit-src"
    base.llm.model.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    InternVLVisionModel(InternVLVisionConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                             intermediate_size=128, image_size=32, patch_size=8)).save_pretrained(vit_dir)
    overrides = [o for o in tiny_overrides if not o.startswith(("model.encoder.", "model.llm."))] + [
        "model.llm.config=null", f"model.llm.pretrained={llm_dir}",
        "model.encoder={name: internvl_vit, pretrained: " + str(vit_dir) + ", pixel_shuffle: 0.5}"]
    run_dir = tmp_path / "run"
    _, _, model = fake_run(overrides, run_dir)
    out = tmp_path / "export"
    assert main(["export", str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out), "--no-hf-llm"]) == 0
    shutil.rmtree(llm_dir)
    shutil.rmtree(vit_dir)

    text = (out / "config.yaml").read_text()
    assert str(llm_dir) not in text and str(vit_dir) not in text
    assert "not written (--no-hf-llm)" in (out / "manifest.json").read_text()
    _, _, reloaded = load_exported(out)
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_export_then_lrc_test_and_next_stage(tiny_overrides, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _, _, model = fake_run(tiny_overrides, run_dir)
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    # evaluate the export as written in its README
    assert main(["test", str(out / "config.yaml"), "--ckpt", str(out / "model.safetensors"),
                 "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["val/mcq_count"] > 0
    # a next stage starts from the export folder (tokenizer and weights from it)
    cfg = validate(load_config(DEMO, tiny_overrides + [f"model.init.path={out}", "data.tokenizer=null"]))
    nxt = build_model(cfg, build_tokenizer(cfg))
    for key, value in nxt.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    # refused: an existing export is never overwritten
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "never overwrites" in capsys.readouterr().err


def test_bad_inputs_leave_no_export_folder(tiny_overrides, tmp_path, capsys, monkeypatch):
    """A bad config, a checkpoint of another model, or weights the exported config could not describe:
    exit 2, found before the export folder is made."""
    import lrc.commands.export as export_module
    from lrc.weights.checkpoints import CheckpointError

    run_dir = tmp_path / "run"
    fake_run(tiny_overrides, run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    corpus = next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("data.root="))
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: [{DEMO}]\ndata: {{root: {corpus}, batchsize: 4}}\n")
    untrimmed = tmp_path / "untrimmed.yaml"  # the demo's full-size model: not the checkpoint's shapes
    untrimmed.write_text(f"base: [{DEMO}]\ndata: {{root: {corpus}, synth_videos: null}}\n")
    out = tmp_path / "export"
    for config, message in ((bad, "data.batchsize"), (untrimmed, "does not fit the model built from this config")):
        assert main(["export", str(ckpt), "--config", str(config), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()

    def undescribable(*args, **kwargs):
        raise CheckpointError("model.llm was loaded from a folder export cannot describe")

    monkeypatch.setattr(export_module, "self_contained", undescribable)
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "cannot describe" in capsys.readouterr().err
    assert not out.exists()
