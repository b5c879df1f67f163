"""Dynamic packing (lrc/data/packing.py): the plan, its sharding and resume, the packed collate, and the
model on packed rows giving the same per-sample losses, gradients and head outputs as padded batches."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lrc.train.build import build_data, build_model, build_tokenizer
from lrc.cli import main
from lrc.config import ConfigError, load_config, validate
from lrc.data.collate import collate
from lrc.data.packing import PackedLoader, PackOverflow, PackSampler, collate_packed, plan_packs
from lrc.model.mllm import answer_loss
from lrc.data.prompt import IGNORE_INDEX

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"
TPO_DEMO = DEMO.with_name("tpo.yaml")
BUDGET = 1024  # the demo's data.max_length: the smallest budget validation allows


def _skewed(n, seed=0, high=1000):
    """Lognormal lengths, as video samples are: most short, a long tail."""
    return np.random.default_rng(seed).lognormal(5.0, 0.8, n).astype(int).clip(1, high).tolist()


# -- the plan -------------------------------------------------------------------------------------
def test_plan_keeps_the_budget_and_places_every_sample_exactly_once():
    lengths = _skewed(500)
    packs = plan_packs(lengths, 1000, seed=3, lookahead=64)
    assert sorted(i for p in packs for i in p) == list(range(500))  # none lost, none twice, none split
    assert all(sum(lengths[i] for i in p) <= 1000 for p in packs)
    assert plan_packs(lengths, 1000, seed=3, lookahead=64) == packs  # a pure function of its inputs
    assert plan_packs(lengths, 1000, seed=4, lookahead=64) != packs
    # first-fit decreasing fills the budget; taking samples in order (next fit) leaves far more room
    next_fit, room = 1, 1000
    for n in lengths:
        next_fit, room = (next_fit, room - n) if n <= room else (next_fit + 1, 1000 - n)
    assert sum(lengths) / (len(packs) * 1000) > 0.9 > sum(lengths) / (next_fit * 1000)


def test_a_sample_longer_than_the_budget_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"vid-2 \(300 tokens\).*at least 300"):
        plan_packs([10, 20, 300], 100, ids=["a", "b", "vid-2"])


def test_packs_shard_across_ranks_and_are_reshuffled_every_epoch():
    lengths = _skewed(100, seed=1)
    whole = PackSampler(lengths, 1000, seed=1, num_replicas=1, rank=0)
    ranks = [PackSampler(lengths, 1000, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for epoch in (0, 1):
        shares = [r.order(epoch) for r in ranks]
        assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(ranks[0])  # same steps on every rank
        taken = [p for s in shares for p in s]
        assert set(taken) == set(whole.packs)  # every pack on some rank ...
        assert len(taken) - len(whole.packs) < 3  # ... and only the last few repeated to even the ranks out
        assert sorted(whole.order(epoch)) == sorted(whole.packs)  # one process: each pack exactly once
    assert ranks[0].order(0) != ranks[0].order(1)  # the pack order changes with the epoch
    assert whole.order(1) == PackSampler(lengths, 1000, seed=1, num_replicas=1, rank=0).order(1)


# -- loader and collate -----------------------------------------------------------------------------
def _item(i, n):
    """A dataset item of n tokens with the keys collate reads."""
    labels = torch.full((n,), IGNORE_INDEX)
    labels[n - 2:] = 7
    return {"id": f"s{i}", "pixel_values": torch.zeros(1, 3, 2, 2), "timestamps": torch.zeros(1),
            "input_ids": torch.arange(n) + 10 * i, "labels": labels, "answer_start": n - 2,
            "question_type": "x", "query_positions": [1, 2]}


def test_packed_loader_resumes_mid_epoch_exactly_and_refuses_another_plan():
    lengths = _skewed(40, seed=2, high=300)
    data = [_item(i, n) for i, n in enumerate(lengths)]

    def loader(max_tokens=400):
        return PackedLoader(data, lengths, max_tokens, seed=5, lookahead=16)

    whole = loader()
    whole.order.set_epoch(1)
    epoch1 = [b["ids"] for b in whole]
    assert sorted(sum(epoch1, [])) == sorted(it["id"] for it in data)
    it = iter(whole)
    next(it), next(it), next(it)
    state = whole.state_dict()
    assert state["batches"] == 3 and state["packs"] == len(epoch1)
    fresh = loader()
    fresh.load_state_dict(state)
    fresh.order.set_epoch(1)  # what Lightning does at the epoch start
    assert [b["ids"] for b in fresh] == epoch1[3:] and len(fresh) == len(epoch1)
    with pytest.raises(ValueError, match="only with the packing it started with"):
        loader(max_tokens=500).load_state_dict(state)
    from lrc.data.resumable import ResumableLoader

    with pytest.raises(ValueError, match="written by a run with data.packing"):
        ResumableLoader(data, batch_size=2).load_state_dict(state)


def test_collate_packs_one_row_with_restarting_positions_and_row_positions():
    items = [_item(0, 5), {"skipped": "bad"}, _item(1, 3), _item(2, 4)]
    batch = collate_packed(items, pad_id=0, max_tokens=12)
    assert batch["size"] == 3 and batch["skipped"] == ["bad"] and "attention_mask" not in batch
    assert batch["input_ids"].shape == (1, 12)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]]
    assert batch["sample_start"].tolist() == [0, 5, 8] and batch["sample_length"].tolist() == [5, 3, 4]
    assert batch["answer_start"].tolist() == [3, 6, 10]
    assert batch["query_positions"] == [[1, 2], [6, 7], [9, 10]]
    assert torch.equal(batch["input_ids"][0, 5:8], items[2]["input_ids"])
    with pytest.raises(PackOverflow, match=r"\['s0', 's1', 's2'\] holds 12 tokens.*max_tokens=11"):
        collate_packed(items, pad_id=0, max_tokens=11)


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["data.packing.max_tokens=512"], "512 is below data.max_length=1024"),
    (["model.token_dropout.enabled=true", "model.token_dropout.layers=[1]", "model.token_dropout.ratios=[0.5]"],
     "cannot be combined with model.token_dropout"),
    (["loss.dpo_weight=0.5"], "cannot be combined with DPO"),
    (["model.llm.sequence_parallel=2"], "cannot be combined with sequence parallelism"),
    (["data.packing.budget=4"], "data.packing.budget: unknown key"),
    (["data.packing.lookahead=0"], "at least 1, got 0"),
])
def test_packing_config_problems(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(DEMO, ["data.packing.enabled=true", *overrides]))


# -- the model on packed rows -----------------------------------------------------------------------
def _build(config, overrides):
    cfg = validate(load_config(config, overrides))
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    data = build_data(cfg, tok, model)
    data.setup("fit")
    return tok, model, data


def _pack_and_pad(data, tok, pack):
    items = [data.dataset("train")[i] for i in pack]
    return collate_packed(items, tok.pad_token_id, BUDGET), collate(items, tok.pad_token_id)


def _per_sample(out, batch, packed):
    spans = (zip(batch["sample_start"].tolist(), batch["sample_length"].tolist()) if packed else
             ((0, int(n)) for n in batch["attention_mask"].sum(1)))
    return torch.stack([answer_loss(out.logits[[0 if packed else b], s:s + n], out.labels[[0 if packed else b], s:s + n])
                        for b, (s, n) in enumerate(spans)])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_padded_forwards_give_the_same_per_sample_losses_and_gradients(tiny_overrides, attn):
    tok, model, data = _build(DEMO, [*tiny_overrides, "data.packing.enabled=true",
                                     f"data.packing.max_tokens={BUDGET}", f"model.llm.attn_implementation={attn}"])
    packed, padded = _pack_and_pad(data, tok, range(6))
    assert len(set(packed["sample_length"].tolist())) > 1  # padded rows really are padded

    grads = []
    for batch, is_packed in ((packed, True), (padded, False)):
        model.zero_grad()
        out = model(batch)
        losses = _per_sample(out, batch, is_packed)
        answer_loss(out.logits, out.labels).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if is_packed:
            packed_losses, packed_total = losses, answer_loss(out.logits, out.labels)
        else:
            torch.testing.assert_close(packed_losses, losses, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(packed_total, answer_loss(out.logits, out.labels), rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("lora", [False, True])
def test_no_sample_of_a_pack_sees_another(tiny_overrides, lora):
    extra = ["model.llm.lora={r: 4}"] if lora else []
    tok, model, data = _build(DEMO, [*tiny_overrides, "data.packing.enabled=true", f"data.packing.max_tokens={BUDGET}",
                                     *extra])
    packed, _ = _pack_and_pad(data, tok, range(6))
    first = packed["sample_length"][0]
    changed = dict(packed, pixel_values=packed["pixel_values"].clone())
    changed["pixel_values"][: packed["frames_per_sample"][0]] += 1.0  # only the first sample's video
    with torch.no_grad():
        before, after = model(packed).logits, model(changed).logits
    assert not torch.allclose(before[0, :first], after[0, :first])  # the first sample did change ...
    torch.testing.assert_close(before[0, first:], after[0, first:], rtol=0, atol=0)  # ... the others did not


def test_the_packed_train_loader_measures_lengths_as_the_samples_are_built(tiny_overrides):
    tok, model, data = _build(DEMO, [*tiny_overrides, "data.packing.enabled=true", f"data.packing.max_tokens={BUDGET}"])
    dataset = data.dataset("train")
    # visual tokens counted after compression: 4 frames x 4 tokens per frame slots are in the length
    assert all(dataset.num_tokens(i) == len(dataset[i]["input_ids"]) for i in range(len(dataset)))
    assert (dataset[0]["input_ids"] == model.img_context_id).sum() == 4 * 4
    seen = []
    for batch in data.train_dataloader():
        assert batch["input_ids"].shape[1] <= BUDGET and batch["position_ids"].shape == batch["input_ids"].shape
        seen += batch["ids"]
    assert sorted(seen) == sorted(r.id for r in dataset.records)
    dataset.max_length = 10  # a sample the dataset will skip weighs nothing in the plan
    assert dataset.num_tokens(0) == 0


@pytest.fixture(scope="module")
def tpo_corpus(tmp_path_factory):
    from lrc.data.synth import synthesize

    root = tmp_path_factory.mktemp("packing_tpo")
    synthesize(root, videos=6, seed=5, size=32, min_seconds=3.0, max_seconds=6.0, tasks=("mcq", "temporal", "region"))
    return root


def test_tpo_heads_read_the_same_hidden_states_from_a_packed_row(tpo_corpus, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith("data.root=")] + [
        f"data.root={tpo_corpus}", "model.heads.mask=null", "model.heads.temporal.d_model=32",
        "model.heads.temporal.num_heads=2", "model.heads.region.mlp_hidden=32", "data.packing.enabled=true",
        f"data.packing.max_tokens={BUDGET}"]
    tok, model, data = _build(TPO_DEMO, overrides)
    dataset = data.dataset("train")
    wanted = [next(i for i, r in enumerate(dataset.records) if r.task == t) for t in ("mcq", "temporal", "region")]
    wanted += [next(i for i, r in enumerate(dataset.records) if r.task == "region" and i not in wanted)]
    packed, padded = _pack_and_pad(data, tok, wanted)
    with torch.no_grad():
        a, b = model(packed), model(padded)
    torch.testing.assert_close(a.task_logits, b.task_logits, rtol=1e-5, atol=1e-5)
    assert a.head_predictions.keys() == b.head_predictions.keys() == {"temporal", "region"}
    for task, head in model.heads.heads.items():
        for key, value in a.head_predictions[task].items():
            torch.testing.assert_close(value, b.head_predictions[task][key], rtol=1e-4, atol=1e-5, msg=f"{task}.{key}")
        torch.testing.assert_close(head.loss(a.head_predictions[task], a.head_inputs[task])["loss"],
                                   head.loss(b.head_predictions[task], b.head_inputs[task])["loss"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_short_fit_with_packing_runs(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["fit", str(DEMO), "--out", str(run_dir), *tiny_overrides, "data.packing.enabled=true",
                 f"data.packing.max_tokens={BUDGET}", "trainer.max_epochs=2"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["val/loss"]) and 0.0 <= metrics["val/mcq_acc"] <= 1.0


@pytest.fixture
def resume_tools():
    """tests/train/test_resume.py (its SIGTERM sampler registered for this test only, its CLI driver, weights)."""
    import importlib.util

    from lrc.registry import SAMPLERS

    spec = importlib.util.spec_from_file_location("test_resume", Path(__file__).parents[1] / "train" / "test_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    SAMPLERS.add("signal_once", module.SignalOnce)
    yield module
    SAMPLERS._table.pop("signal_once", None)


@pytest.mark.slow
def test_a_packed_fit_stopped_mid_epoch_resumes_to_the_same_weights(resume_tools, tiny_overrides, tmp_path):
    """test_resume's SIGTERM test with packing on: the pack order and the packs done travel in the checkpoint."""
    import subprocess
    import sys

    from lrc.train.run import fit

    flag = tmp_path / "signal-sent"
    overrides = [o for o in tiny_overrides if not o.startswith("trainer.max_epochs")] + [
        "trainer.max_epochs=2", "data.cache_frames=false", "data.packing.enabled=true",
        "data.packing.max_tokens=1024", "data.max_length=512", "data.packing.lookahead=8",
        "data.sampler.name=signal_once", f"data.sampler.flag={flag}",
        "data.num_workers=0",  # the sampler signals its own process: the training process, loading in-process
        # the 40 train samples are measured first (one sampler call each), then packs load: call 60 is
        # inside the third or so pack of the first epoch
        "data.sampler.at_call=60",
    ]
    flag.touch()  # the reference run is never signalled
    reference, ref_metrics = fit(load_config(DEMO, overrides), out=str(tmp_path / "reference"))
    flag.unlink()

    run_dir = tmp_path / "interrupted"
    proc = subprocess.run([sys.executable, "-c", resume_tools.DRIVER, "fit", str(DEMO), "--out", str(run_dir),
                           *overrides], capture_output=True, text=True, timeout=120, cwd=resume_tools.ROOT)
    assert proc.returncode == 143, proc.stderr[-3000:]
    stopped_at = json.loads((run_dir / "interrupted.json").read_text())["global_step"]
    assert 0 < stopped_at < ref_metrics["train/steps"] / 2  # mid-way through the first epoch
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["train/steps"] == ref_metrics["train/steps"]
    ref, got = resume_tools.weights(reference), resume_tools.weights(run_dir)
    for key in ref:
        assert torch.allclose(ref[key], got[key], rtol=1e-6, atol=1e-7), key


# The subprocess: the real CLI, recording which samples each rank's packs held.
DDP_DRIVER = """
import json, os, sys
sys.path[:0] = [{root!r}]
from lrc.data import packing
collate_packed = packing.collate_packed
def recording(items, pad_id, max_tokens):
    batch = collate_packed(items, pad_id, max_tokens)
    with open(os.environ["LRC_TEST_PACKS"], "a") as fh:
        fh.write(json.dumps([os.environ.get("LOCAL_RANK", "0"), batch.get("ids", [])]) + "\\n")
    return batch
packing.collate_packed = recording
from lrc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_ddp_ranks_train_on_their_own_packs_like_one_process_accumulating_two(tiny_overrides, tmp_path):
    """2 gloo ranks × 1 pack per step against 1 process accumulating 2 packs per step: step k of both sees
    packs 2k and 2k+1 of the epoch's order (rank r takes packs r, r+2, ...), and DDP's mean of the ranks'
    losses is what accumulation over two packs sums, so the weights after two steps agree."""
    import os
    import subprocess
    import sys

    overrides = [*tiny_overrides, "data.packing.enabled=true", "data.packing.max_tokens=1024",
                 "data.max_length=512", "data.packing.lookahead=8", "trainer.max_steps=2",
                 "data.num_workers=0"]  # packs are recorded as they are collated: no worker collating ahead
    packs = tmp_path / "packs.jsonl"
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER.format(root=str(DEMO.parents[2])))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")}

    def run(out: str, *extra: str) -> None:
        # both runs in a fresh process with one thread: earlier tests in this process (seeds, thread
        # counts) would otherwise change the reference's summation order and, through AdamW, its weights
        done = subprocess.run([sys.executable, str(driver), "fit", str(DEMO), "--out", str(tmp_path / out), *overrides,
                               *extra], env={**env, "LRC_TEST_PACKS": str(packs), "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    run("single", "trainer.accumulate_grad_batches=2")
    packs.unlink()
    run("ddp", "distributed.strategy=ddp", "distributed.devices=2")
    seen = [json.loads(line) for line in packs.read_text().splitlines()]
    by_rank = {rank: [i for r, ids in seen if r == rank for i in ids] for rank in ("0", "1")}
    assert by_rank["0"] and by_rank["1"] and not set(by_rank["0"]) & set(by_rank["1"])  # each rank its own packs

    a = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2
    for key in a["state_dict"]:
        # AdamW divides by each gradient's running RMS: the two summation orders differ in the last bits,
        # which tiny gradients turn into small update differences (as in tests/parallel/test_distributed.py)
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=1e-4, atol=1e-4, msg=key)
