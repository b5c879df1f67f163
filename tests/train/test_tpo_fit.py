"""TPO end to end on real synthetic MP4s: joint training with all three heads, heads removed by YAML,
generation routed to a head, and DPO with either reference policy."""

import json
from pathlib import Path

import pytest
import torch

from lrc.cli import main

TPO_DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tpo.yaml"
DEMO = TPO_DEMO.with_name("tiny.yaml")


@pytest.fixture(scope="session")
def tpo_corpus(tmp_path_factory) -> Path:
    """10 short videos at 32 px with every TPO task and preference pairs."""
    from lrc.data.synth import synthesize

    root = tmp_path_factory.mktemp("tpo_corpus")
    synthesize(root, videos=10, seed=5, size=32, min_seconds=3.0, max_seconds=8.0,
               tasks=("mcq", "temporal", "region", "mask", "preference"))
    return root


@pytest.fixture
def tpo_overrides(tpo_corpus, tiny_overrides):
    shrink = [o for o in tiny_overrides if not o.startswith("data.root=")]
    return shrink + [f"data.root={tpo_corpus}", "model.heads.temporal.d_model=32",
                     "model.heads.temporal.num_heads=2", "model.heads.region.mlp_hidden=32",
                     "model.heads.mask.adapter_hidden=32"]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_fit_with_all_heads_logs_every_term_and_reports_every_metric(tpo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["fit", str(TPO_DEMO), "--out", str(run_dir), *tpo_overrides]) == 0
    m = _metrics(run_dir)
    for key in ("val/temporal/miou", "val/temporal/r1@0.3", "val/temporal/r1@0.5", "val/temporal/r1@0.7",
                "val/region/miou", "val/region/acc@0.5", "val/mask/j", "val/mask/jf", "val/task_acc",
                "val/temporal/route_acc", "val/mcq_acc"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for term in ("train/base", "train/task", "train/temporal/loss", "train/region/loss", "train/mask/loss",
                 "train/mask/dice", "train/loss"):
        assert term in header, term


@pytest.mark.slow
def test_heads_are_removed_by_yaml_alone(tpo_overrides, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["fit", str(TPO_DEMO), "--out", str(run_dir), *tpo_overrides,
                 "model.heads.mask=null", "model.heads.temporal=null"]) == 0
    m = _metrics(run_dir)
    assert "val/region/miou" in m
    assert not any(k.startswith(("val/mask/", "val/temporal/")) for k in m)


@pytest.mark.slow
def test_generation_routes_to_the_region_head(tpo_overrides):
    """Overfit one region question: the LLM learns to emit <box_begin>, and generate() then runs the head."""
    from lrc.train.build import build_data, build_model, build_tokenizer
    from lrc.config import load_config, validate

    cfg = validate(load_config(TPO_DEMO, tpo_overrides + ["model.heads.mask=null", "model.heads.temporal=null"]))
    torch.manual_seed(0)
    tok = build_tokenizer(cfg)
    model = build_model(cfg, tok)
    data = build_data(cfg, tok, model)
    data.setup("fit")
    ds = data.dataset("train")
    item = next(ds[i] for i in range(len(ds)) if ds.records[i].task == "region")
    batch = data.collate([item])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        out = model(batch)
        from lrc.model.mllm import answer_loss

        loss = answer_loss(out.logits, out.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    begin = tok.convert_tokens_to_ids("<box_begin>")
    result = model.generate(batch, max_new_tokens=4, eos_id=tok.convert_tokens_to_ids("<|im_end|>"))[0]
    assert result["token_ids"][0] == begin
    box = result["heads"]["region"]["box"]
    assert len(box) == 4 and all(0.0 <= v <= 1.0 for v in box) and box[0] <= box[2] and box[1] <= box[3]


@pytest.mark.slow
@pytest.mark.parametrize("reference,extra", [
    ("frozen_copy", []),
    ("lora_disabled", ["model.llm.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}"]),
])
def test_dpo_trains_against_its_reference(tpo_overrides, tmp_path, reference, extra):
    run_dir = tmp_path / "run"
    overrides = [o for o in tpo_overrides if not o.startswith("model.heads.")]
    overrides += ["trainer.log_every_n_steps=1", "data.tasks=[preference]", "loss.dpo_weight=1.0", f"loss.dpo_reference={reference}", *extra]
    assert main(["fit", str(DEMO), "--out", str(run_dir), *overrides]) == 0
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/dpo" in header and "train/dpo_margin" in header
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("_reference") for k in state)  # the frozen reference is not saved
    if reference == "lora_disabled":
        # LoRA trains the adapters only: every base weight of the LLM is still the one it was built with
        import lightning as L

        from lrc.train.build import build_model, build_tokenizer
        from lrc.config import load_config, validate

        cfg = validate(load_config(DEMO, overrides))
        L.seed_everything(cfg["run"]["seed"], workers=True, verbose=False)
        built = build_model(cfg, build_tokenizer(cfg)).state_dict()
        base = [k for k in built if k.startswith("llm.") and "lora_" not in k]
        lora = [k for k in state if "lora_" in k]
        assert base and lora
        for k in base:
            assert torch.equal(state["model." + k], built[k]), k
        assert any(not torch.equal(state["model." + k], built[k]) for k in built if "lora_B" in k)
