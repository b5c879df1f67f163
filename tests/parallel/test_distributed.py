"""The shared distributed block (lrc/parallel/distributed.py, docs/distributed.md): validation, the strategy built
from it, activation checkpointing, evaluation shards, the run dir every rank shares, and a real 2-process
DDP fit on CPU (gloo) that matches a 1-process fit with the same global batch."""

import copy
import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lrc.config import ConfigError, load_config, validate
from lrc.data.sharding import EvalShardSampler, ShardingError
from lrc.parallel.distributed import (RUN_DIR_ENV, DistributedSetupError, apply_activation_checkpointing,
                             block_classes, build_strategy, trainer_arguments)
from lrc.train.run import RunDirError, make_run_dir

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID",
              "TORCHELASTIC_RUN_ID", RUN_DIR_ENV)


def problems(overrides):
    with pytest.raises(ConfigError) as info:
        validate(load_config(DEMO, overrides))
    return "\n".join(info.value.problems)


def test_bad_values_are_reported_together_with_what_to_do():
    text = problems(["distributed.strategy=fdsp", "distributed.accelerator=cpu", "distributed.precision=bf16-mixed",
                     "distributed.devices=0", "distributed.zero_stage=4", "distributed.backend=ncl",
                     "distributed.fsdp_sharding=ful", "trainer.devices=2"])
    assert "distributed.strategy: 'fdsp' is not one of auto, ddp, fsdp, deepspeed. Did you mean 'fsdp'" in text
    assert "distributed.precision: bf16-mixed needs a GPU but distributed.accelerator is cpu" in text
    assert "distributed.devices: expected int >= 1 or list of int >= 0 or one of -1, auto, got 0" in text
    assert "distributed.zero_stage: 4 is not one of 1, 2, 3" in text
    assert "Did you mean 'nccl'" in text and "Did you mean 'full'" in text
    assert "trainer.devices: set distributed.devices instead" in text
    # Lightning's own names get the block's spelling
    assert "use strategy: deepspeed with zero_stage: 2 and offload: true" in problems(
        ["distributed.strategy=deepspeed_stage_2_offload"])
    assert "use strategy: ddp" in problems(["distributed.strategy=ddp_spawn"])


def test_sharded_strategies_need_cuda_and_deepspeed_says_how_to_install():
    # Lightning's FSDPStrategy refuses accelerator=cpu (checked: "requires a GPU accelerator")
    assert "Lightning's FSDP needs CUDA devices; on the CPU use ddp" in problems(
        ["distributed.strategy=fsdp", "distributed.accelerator=cpu"])
    text = problems(["distributed.strategy=deepspeed", "distributed.zero_stage=1", "distributed.offload=true"])
    assert "stage 1 cannot offload" in text
    if importlib.util.find_spec("deepspeed") is None:
        assert "deepspeed is not installed" in text and "pip install deepspeed" in text


def test_blocks_are_found_on_the_built_model_and_fsdp_wraps_them():
    from timm.models.vision_transformer import Block
    from transformers.models.internvl.modeling_internvl import InternVLVisionLayer
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    from lrc_plugins.encoders.internvl_vit import InternVLVisionEncoder
    from lrc_plugins.encoders.timm_vit import TimmViTEncoder
    from lrc_plugins.llms.hf_causal_lm import HFCausalLM

    llm = HFCausalLM(vocab_size=40, config=dict(model_type="qwen2", hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    timm_vit = TimmViTEncoder(image_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    internvl = InternVLVisionEncoder(config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, image_size=16, patch_size=8))
    model = torch.nn.ModuleDict({"vit": timm_vit, "internvl": internvl, "llm": llm})
    assert block_classes(model) == {Block, InternVLVisionLayer, Qwen2DecoderLayer}

    node = validate(load_config(DEMO, ["distributed.strategy=fsdp", "distributed.devices=8",
                                       "distributed.activation_checkpointing=true"]))["distributed"]
    strategy = build_strategy(node, model, "cuda")  # built, not set up: no GPU is needed to check it
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block, InternVLVisionLayer, Qwen2DecoderLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == \
        {Block, InternVLVisionLayer, Qwen2DecoderLayer}
    assert strategy.sharding_strategy.name == "FULL_SHARD" and strategy.kwargs["use_orig_params"]
    # on this CPU-only machine: a clear error, not Lightning's traceback
    if not torch.cuda.is_available():
        with pytest.raises(DistributedSetupError, match="Lightning's FSDP needs CUDA devices"):
            trainer_arguments({**node, "accelerator": "auto"}, model)


def test_precision_auto_is_fp32_on_cpu_and_one_device_is_lightnings_single_device():
    node = validate(load_config(DEMO, ["distributed.accelerator=cpu"]))["distributed"]
    args = trainer_arguments(node, torch.nn.Linear(2, 2))
    assert args == {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "precision": "32-true", "strategy": "auto"}
    args = trainer_arguments({**node, "devices": 2}, torch.nn.Linear(2, 2))
    assert type(args["strategy"]).__name__ == "DDPStrategy"  # auto with several devices: ddp with the block's options


def test_activation_checkpointing_recomputes_blocks_and_keeps_gradients():
    from lrc_plugins.encoders.timm_vit import TimmViTEncoder
    from lrc_plugins.llms.hf_causal_lm import HFCausalLM

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({
        "vit": TimmViTEncoder(image_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        "llm": HFCausalLM(vocab_size=40, config=dict(model_type="qwen2", hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=2, num_attention_heads=2,
                                                     num_key_value_heads=1)),
    })
    wrapped = copy.deepcopy(model)
    assert apply_activation_checkpointing(wrapped, {"activation_checkpointing": True, "strategy": "ddp"}) == 4
    assert apply_activation_checkpointing(copy.deepcopy(model), {"activation_checkpointing": True,
                                                                 "strategy": "fsdp"}) == 0  # FSDP's own policy
    pixels, embeds = torch.randn(2, 3, 16, 16), torch.randn(2, 5, 32)

    def grads(m):
        calls = []
        for block in m["vit"].vit.modules():
            if type(block).__name__ == "Block":
                block.register_forward_pre_hook(lambda *_: calls.append(1))
        loss = m["vit"](pixels).square().mean() + m["llm"](embeds).logits.square().mean()
        loss.backward()
        names = {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in m.named_parameters()}
        return names, len(calls)

    plain, plain_calls = grads(model)
    checkpointed, checkpointed_calls = grads(wrapped)
    assert (plain_calls, checkpointed_calls) == (2, 4)  # each block's forward ran again in backward
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)
    # the state dict keeps the unwrapped names, so checkpoints load either way
    assert set(wrapped.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("size,world", [(8, 2), (7, 2), (5, 3), (2, 2)])
def test_eval_shards_cover_the_split_once_or_pad_evenly(size, world):
    uneven = [list(EvalShardSampler(size, False, world, r)) for r in range(world)]
    assert sorted(i for shard in uneven for i in shard) == list(range(size))
    assert all(len(shard) == len(s) for shard, s in zip(uneven, (EvalShardSampler(size, False, world, r)
                                                                   for r in range(world))))
    even = [list(EvalShardSampler(size, True, world, r)) for r in range(world)]
    assert len({len(shard) for shard in even}) == 1 and set(i for s in even for i in s) == set(range(size))
    with pytest.raises(ShardingError, match="fewer than the"):
        EvalShardSampler(world - 1, False, world, 0)


def test_every_rank_uses_the_run_dir_of_rank_zero(tmp_path, monkeypatch):
    for var in LAUNCH_ENV:
        monkeypatch.delenv(var, raising=False)
    cfg = {"run": {"root": str(tmp_path / "runs"), "name": "exp"}}
    # rank 0 of Lightning's own launcher: a timestamped dir, handed to the ranks it starts
    first = make_run_dir(cfg, None)
    assert os.environ[RUN_DIR_ENV] == str(first.resolve())
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert make_run_dir(cfg, None) == first.resolve()
    # torchrun: ranks name the dir after the rendezvous id; rank 0 creates it, another rank joins it
    monkeypatch.delenv(RUN_DIR_ENV)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("RANK", "0")
    made = make_run_dir(cfg, None)
    assert made == tmp_path / "runs" / "exp" / "torchrun-abc"
    (made / "config.yaml").write_text("rank 0 was here\n")
    monkeypatch.setenv("RANK", "1")
    assert make_run_dir(cfg, None) == made  # not refused as "not empty"
    # without a shared name the ranks cannot agree: say how to give one
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    with pytest.raises(RunDirError, match="pass --out RUN_DIR"):
        make_run_dir(cfg, None)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RunDirError, match="pass --out RUN_DIR"):
        make_run_dir(cfg, None)
    # SLURM: the job id
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert make_run_dir(cfg, None) == tmp_path / "runs" / "exp" / "slurm-77"


# The subprocess: the real CLI, recording which rank renamed which file into place (write_json and
# write_resolved_config write a temporary file and os.replace it), so the test sees who wrote what.
DRIVER = f"""
import os, sys
sys.path[:0] = [{str(ROOT)!r}]
log, replace = os.environ["LRC_TEST_WRITES"], os.replace
def recording_replace(src, dst, *args, **kwargs):
    with open(log, "a") as fh:
        fh.write(f"{{os.environ.get('LOCAL_RANK', '0')}} {{os.path.basename(str(dst))}}\\n")
    return replace(src, dst, *args, **kwargs)
os.replace = recording_replace
from lrc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "logs" / "metrics.csv").open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tiny_overrides, tmp_path):
    """2 ranks × batch 2 against 1 process × batch 4: same data, seed and steps.

    Why they can match exactly: the tiny corpus' questions are answered with one option letter, so every
    sample has the same number of answer tokens. DDP averages the ranks' gradients of their own mean
    losses; that is the gradient of the global token mean only when the ranks hold equally many answer
    tokens (with unequal counts, a token on the smaller rank weighs more). The train order is shared too:
    rank r takes samples r, r+2, ... of the epoch's permutation, so step k sees the same 4 samples either
    way. Nothing is random in the forward (no dropout in the tiny towers, token dropout off)."""
    steps = ["trainer.max_steps=3", "trainer.log_every_n_steps=1"]
    overrides = [*tiny_overrides, *steps]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    writes = tmp_path / "writes.txt"
    env = {**os.environ, "LRC_TEST_WRITES": str(writes), "OMP_NUM_THREADS": "1"}
    for var in LAUNCH_ENV:
        env.pop(var, None)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # the reference in a fresh one-thread process too: what earlier tests left in this process (seeds,
    # thread counts) would change its summation order and, through AdamW, its weights
    done = subprocess.run([sys.executable, str(driver), "fit", str(DEMO), "--out", str(single), *overrides,
                           "data.batch_size=4"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single_metrics = json.loads((single / "metrics.json").read_text())
    writes.unlink()
    # Lightning's own launcher: this one process starts rank 1 by re-running the same command
    done = subprocess.run([sys.executable, str(driver), "fit", str(DEMO), "--out", str(ddp), *overrides,
                           "data.batch_size=2", "distributed.strategy=ddp", "distributed.devices=2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("val MCQ accuracy") == 1  # one report, from rank 0

    # per-step losses: the logged train loss is the mean over ranks (sync_dist)
    assert len(losses(ddp)) == len(losses(single)) == 3
    assert losses(ddp) == pytest.approx(losses(single), rel=1e-5)
    # final weights. Not to float precision: AdamW divides each gradient by its running RMS, so entries
    # whose gradients are tiny (pos_embed's) turn the different summation order of 2 ranks into update
    # differences of a few % of one step (lr 1e-3 here; atol 1e-4 over 3 steps)
    a = torch.load(single / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)

    # validation covers the whole split once (each rank scored its shard; the results were gathered)
    metrics = json.loads((ddp / "metrics.json").read_text())
    val_records = len((Path(tiny_overrides[0].split("=", 1)[1]) / "val.jsonl").read_text().splitlines())
    assert metrics["val/mcq_count"] == single_metrics["val/mcq_count"] == val_records
    assert metrics["val/loss"] == pytest.approx(single_metrics["val/loss"], rel=1e-5)
    assert metrics["val/mcq_acc"] == single_metrics["val/mcq_acc"]
    # only rank 0 wrote the run's files
    written = [line.split() for line in writes.read_text().splitlines()]
    by_file = {name: {rank for rank, n in written if n == name} for _, name in written}
    assert by_file["config.yaml"] == by_file["metrics.json"] == by_file["skipped.json"] == {"0"}
    assert {rank for rank, _ in written} == {"0"}
