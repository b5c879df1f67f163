"""Ulysses sequence parallelism (lrc/parallel/sequence_parallel.py): two real gloo processes on the CPU against the
same model unsharded, plus the refusals that need no process group."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lrc.parallel.sequence_parallel import SequenceParallelError, check_right_padded, sequence_parallel_group

# 4 query heads over 2 key/value heads: GQA, split 2 + 1 per rank
TINY_QWEN2 = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
VOCAB = 97


def tiny_llm(sequence_parallel: int, gradient_checkpointing: bool = False, **config):
    from lrc_plugins.llms.hf_causal_lm import HFCausalLM

    torch.manual_seed(0)
    return HFCausalLM(VOCAB, config={**TINY_QWEN2, **config}, dtype="float64", sequence_parallel=sequence_parallel,
                      gradient_checkpointing=gradient_checkpointing)


def reference_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """lrc.model.mllm.answer_loss without its float32 cast, so float64 comparisons stay tight."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                             ignore_index=-100)


def _worker(rank: int, world: int, port: int, length: int, checkpointing: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        llm = tiny_llm(sequence_parallel=world, gradient_checkpointing=checkpointing).train()
        assert llm.model.config._attn_implementation == "ulysses_sdpa"
        g = torch.Generator().manual_seed(1)  # same inputs on every rank
        embeds = torch.randn(2, length, 64, generator=g, dtype=torch.float64)
        labels = torch.randint(0, VOCAB, (2, length), generator=g)
        labels[:, : length // 3] = -100  # unscored prompt, as in lrc batches
        mask = torch.ones(2, length, dtype=torch.long)
        mask[1, length - 4:] = 0  # right padding on the second row
        labels[1, length - 4:] = -100
        head_weights = torch.randn(64, generator=g, dtype=torch.float64)  # a TPO-like loss on hidden states

        # unsharded: the same weights, the plain forward (no sequence_parallel argument → inner sdpa)
        full_embeds = embeds.clone().requires_grad_()
        out = llm(inputs_embeds=full_embeds, attention_mask=mask, output_hidden_states=True)
        ref_hidden = out.hidden_states[-1]
        ref_loss = reference_loss(out.logits, labels) + (ref_hidden[:, 3] @ head_weights).sum()
        ref_loss.backward()
        # (the embedding table gets none: the forward starts from inputs_embeds, as VideoMLLM's does)
        ref_grads = {n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None}
        assert len(ref_grads) == len(list(llm.parameters())) - 1
        ref_embed_grad = full_embeds.grad.clone()
        llm.zero_grad()

        sharded_embeds = embeds.clone().requires_grad_()
        sharded = llm.forward_sequence_parallel(sharded_embeds, mask, labels, output_hidden_states=True)
        chunk = -(-length // world)
        assert (sharded.start, sharded.stop, sharded.length) == (rank * chunk, (rank + 1) * chunk, length)
        loss = sharded.loss + (sharded.hidden[:, 3] @ head_weights).sum()
        loss.backward()

        # logits: gathered chunks, padding dropped, compared at real tokens (padded rows differ by design)
        parts = [torch.empty_like(sharded.logits) for _ in range(world)]
        dist.all_gather(parts, sharded.logits.detach().contiguous())
        logits = torch.cat(parts, dim=1)[:, :length]
        real = mask.bool()
        torch.testing.assert_close(logits[real], out.logits.detach()[real], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(sharded.hidden.detach()[real], ref_hidden.detach()[real], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-9, atol=1e-9)
        # gradients: averaged over the group, as DDP does (lrc/parallel/sequence_parallel.py module docstring)
        assert {n for n, p in llm.named_parameters() if p.grad is not None} == set(ref_grads)
        for name, param in llm.named_parameters():
            if param.grad is None:
                continue
            grad = param.grad.clone()
            dist.all_reduce(grad)
            torch.testing.assert_close(grad / world, ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)
        grad = sharded_embeds.grad.clone()
        dist.all_reduce(grad)
        torch.testing.assert_close(grad / world, ref_embed_grad, rtol=1e-8, atol=1e-10)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("length, checkpointing", [(16, False), (13, True)],
                         ids=["divisible", "padded-and-recomputed"])
def test_two_ranks_match_the_unsharded_model(length, checkpointing, monkeypatch):
    """Logits, hidden states, loss and every gradient of a 2-rank Ulysses forward equal one process's."""
    # the spawned workers import this file as tests.test_sequence_parallel (pytest's importlib mode)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    # (with gradient checkpointing the backward re-runs the layers, all-to-alls included)
    mp.spawn(_worker, args=(2, _free_port(), length, checkpointing), nprocs=2, join=True)


def test_heads_must_split_evenly():
    with pytest.raises(SequenceParallelError, match=r"num_attention_heads \(4\) is not a multiple of 3"):
        tiny_llm(sequence_parallel=3)
    # GQA: 4 query heads split 4 ways, but 2 key/value heads do not
    with pytest.raises(SequenceParallelError, match=r"num_key_value_heads \(2\) is not a multiple of 4"):
        tiny_llm(sequence_parallel=4)


def test_refuses_what_it_cannot_shard():
    with pytest.raises(SequenceParallelError, match="eager kernel"):
        from lrc_plugins.llms.hf_causal_lm import HFCausalLM

        HFCausalLM(VOCAB, config=TINY_QWEN2, attn_implementation="eager", sequence_parallel=2)
    with pytest.raises(SequenceParallelError, match="sliding-window"):
        tiny_llm(sequence_parallel=2, use_sliding_window=True, sliding_window=8, max_window_layers=0)
    with pytest.raises(SequenceParallelError, match="right-padded"):
        check_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    check_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(SequenceParallelError, match="runs alone"):
        sequence_parallel_group(2)



DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


def sibling_test_distributed():
    """tests/parallel/test_distributed.py, whose helpers (config problems, CLI driver, loss reader) serve here too;
    pytest's importlib mode puts no test folder on sys.path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("test_distributed", Path(__file__).with_name("test_distributed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validate_refuses_unsupported_combinations():
    text = sibling_test_distributed().problems([
        "model.llm.sequence_parallel=2", "distributed.devices=3", "model.token_dropout.enabled=true",
        "data.packing.enabled=true", "model.llm.attn_implementation=eager"])
    assert "model.token_dropout.enabled: token dropout does not work with model.llm.sequence_parallel=2" in text
    assert "data.packing: cannot be combined with sequence parallelism" in text  # lrc/config/validation.py
    assert "model.llm.attn_implementation: model.llm.sequence_parallel=2 needs one of sdpa" in text
    assert "2 must divide the number of processes, distributed.devices × num_nodes = 3" in text


def test_a_training_forward_without_a_process_group_says_so(tiny_overrides):
    """The model builds with sequence_parallel=2 (nothing distributed at build time); the first training
    forward needs the group and says how to get one."""
    from lrc.train.build import build_model, build_tokenizer
    from lrc.config import load_config, validate

    cfg = validate(load_config(DEMO, [*tiny_overrides, "model.llm.sequence_parallel=2", "distributed.devices=2",
                                      "model.llm.config.num_hidden_layers=1"]))
    model = build_model(cfg, build_tokenizer(cfg))
    assert model.sequence_parallel == 2 and model.llm.model.config._attn_implementation == "ulysses_sdpa"
    with pytest.raises(SequenceParallelError, match="runs alone"):
        model.llm.forward_sequence_parallel(torch.zeros(1, 4, model.llm.hidden_size))


@pytest.mark.slow
def test_two_rank_sequence_parallel_fit_matches_one_process(tiny_overrides, tmp_path):
    """`lrc fit` with 2 ranks sharing every sequence (DDP over the pair, one data-parallel replica)
    against one process: the same batches (the train order is sharded by replica, not by rank), so the
    same per-step losses and the same final weights."""
    import subprocess
    import sys

    from lrc.config import load_config
    from lrc.train.run import fit

    ddp = sibling_test_distributed()  # the same comparison as its DDP test, with sharded sequences

    overrides = [*tiny_overrides, "trainer.max_steps=3", "trainer.log_every_n_steps=1", "data.batch_size=2"]
    single, _ = fit(load_config(DEMO, overrides), out=str(tmp_path / "single"))
    sp = tmp_path / "sp"
    env = {k: v for k, v in os.environ.items() if k not in ddp.LAUNCH_ENV}
    env.update(OMP_NUM_THREADS="1", LRC_TEST_WRITES=str(tmp_path / "writes.txt"))
    driver = tmp_path / "driver.py"
    driver.write_text(ddp.DRIVER)
    # Lightning's own launcher: this process starts rank 1 by re-running the same script and arguments
    done = subprocess.run([sys.executable, str(driver), "fit", str(DEMO), "--out", str(sp), *overrides,
                           "distributed.strategy=ddp", "distributed.devices=2", "model.llm.sequence_parallel=2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    assert len(ddp.losses(sp)) == len(ddp.losses(single)) == 3
    assert ddp.losses(sp) == pytest.approx(ddp.losses(single), rel=1e-5)
    a, b = (torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
            for run in (single, sp))
    assert a.keys() == b.keys()
    # float32 and AdamW: the update divides by the gradient's own scale, so rounding differences on
    # near-zero gradients (the sharded run attends with is_causal instead of a padding mask) move a few
    # weights by up to ~1e-4 of the ~3e-3 an element moves in 3 steps; the float64 test below checks the
    # gradients themselves to 1e-8
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=2e-4, msg=key)


def _model_worker(rank: int, world: int, port: int, cfg: dict, batch: dict) -> None:
    from lrc.train.build import build_model, build_tokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_model(cfg, build_tokenizer(cfg)).double()
        batch = {**batch, "pixel_values": batch["pixel_values"].double()}
        # unsharded: eval mode takes the plain path (nothing in the tiny towers behaves differently)
        ref = model.eval()(batch)
        assert ref.base_loss is None
        reference_loss(ref.logits, ref.labels).backward()
        ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        out = model.train()(batch)
        assert out.logits.shape[1] == -(-batch["input_ids"].shape[1] // world)  # this rank's chunk
        out.base_loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert grads.keys() == ref_grads.keys() and any(n.startswith("encoder.") for n in grads)
        for name, grad in grads.items():
            dist.all_reduce(grad)
            torch.testing.assert_close(grad / world, ref_grads[name], rtol=1e-8, atol=1e-11, msg=name)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_video_mllm_training_forward_matches_unsharded(tiny_overrides, monkeypatch):
    """VideoMLLM in training with sequence_parallel=2 on a real (right-padded) batch: L_base and the
    gradients of every parameter, encoder and projector included, equal the unsharded model's (float64)."""
    from lrc.train.build import build_data, build_model, build_tokenizer
    from lrc.config import load_config, validate

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    cfg = validate(load_config(DEMO, [*tiny_overrides, "model.llm.sequence_parallel=2", "distributed.devices=2"]))
    data = build_data(cfg, build_tokenizer(cfg), build_model(cfg, build_tokenizer(cfg)))
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert not batch["attention_mask"].all()  # rows of different lengths: padding is exercised
    mp.spawn(_model_worker, args=(2, _free_port(), cfg, batch), nprocs=2, join=True)
