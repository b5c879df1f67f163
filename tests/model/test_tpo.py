"""TPO wiring: task tokens in prompts, routing labels, query positions, DPO pieces, head config checks."""

import math

import pytest
import torch
from transformers import AutoTokenizer

from lrc.config import ConfigError, load_config, validate
from lrc.protocols import HeadBatch
from lrc.data.prompt import IGNORE_INDEX, REGION_PLACEHOLDER, PromptBuilder, prepare_tokenizer
from lrc.model.tpo import TaskHeads, dpo_loss, sequence_logps
from tests.conftest import DEMO

TASK_TOKENS = {"<box>": "<box_begin>", "<temp>": "<temp_begin>"}


@pytest.fixture(scope="module")
def prompts(corpus):
    extra = [t for pair in TASK_TOKENS.items() for t in pair] + [REGION_PLACEHOLDER]
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(corpus / "tokenizer"), extra_tokens=extra)
    return PromptBuilder(tok, tokens_per_frame=2, task_tokens=TASK_TOKENS)


def test_task_token_answer_is_routed_and_not_a_label(prompts):
    conv = [{"from": "human", "value": "<video>\nWhat shape is the red object?"},
            {"from": "gpt", "value": "<box>"}]
    enc = prompts.encode_conversation(conv, duration=4.0, num_frames=2)
    box, begin = prompts._single_id("<box>"), prompts._single_id("<box_begin>")
    i = enc.input_ids.index(box)
    assert enc.input_ids[i - 1] == begin and enc.input_ids[i + 1] == prompts.im_end_id
    assert enc.labels[i - 1] == begin  # the LLM learns to emit the routing token
    assert enc.labels[i] == IGNORE_INDEX  # the task token is input only
    assert enc.labels[i + 1] == prompts.im_end_id
    assert enc.answer_start == i - 1


def test_query_positions_are_the_question_text(prompts):
    conv = [{"from": "human", "value": "<video>\nWhat shape is the red object?"},
            {"from": "gpt", "value": "<box>"}]
    enc = prompts.encode_conversation(conv, duration=4.0, num_frames=2)
    text = prompts.tok.decode([enc.input_ids[p] for p in enc.query_positions])
    assert text == "What shape is the red object?"


def test_rejected_answer_scores_only_the_last_turn(prompts):
    conv = [{"from": "human", "value": "<video>\nWhat colour is the circle?"}, {"from": "gpt", "value": "red"},
            {"from": "human", "value": "What shape is the red object?"}, {"from": "gpt", "value": "circle"}]
    worse = prompts.encode_rejected(conv, "square", duration=4.0, num_frames=2, sample_id="s1")
    labelled = [t for t in worse.labels if t != IGNORE_INDEX]
    assert prompts.tok.decode(labelled) == "square<|im_end|>"
    chosen = prompts.last_turn_only(prompts.encode_conversation(conv, duration=4.0, num_frames=2))
    assert prompts.tok.decode([t for t in chosen.labels if t != IGNORE_INDEX]) == "circle<|im_end|>"
    with pytest.raises(Exception, match="s1"):
        prompts.encode_rejected(conv[:1], "x", duration=4.0, num_frames=2, sample_id="s1")


def test_dpo_loss_values():
    zeros = torch.zeros(3)
    loss, margin = dpo_loss(zeros, zeros, zeros, zeros, beta=0.1)
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-6) and torch.equal(margin, zeros)
    better, _ = dpo_loss(torch.full((3,), 2.0), zeros, zeros, zeros, beta=0.5)
    worse, _ = dpo_loss(zeros, torch.full((3,), 2.0), zeros, zeros, beta=0.5)
    assert better < math.log(2) < worse
    # the reference cancels: the same margin over the reference gives the same loss
    shifted, _ = dpo_loss(torch.full((3,), 5.0), torch.full((3,), 3.0), torch.full((3,), 3.0), torch.full((3,), 3.0), 0.5)
    assert torch.isclose(shifted, better)


def test_sequence_logps_sums_labelled_tokens_only():
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[IGNORE_INDEX, 3, IGNORE_INDEX, 5]])
    lp = logits.log_softmax(-1)
    expected = lp[0, 0, 3] + lp[0, 2, 5]
    assert torch.isclose(sequence_logps(logits, labels)[0], expected)


class _Head(torch.nn.Module):
    task, task_token, begin_token = "region", "<box>", "<box_begin>"

    def encode_box(self, boxes):
        return boxes.sum(-1, keepdim=True).expand(-1, 4) * 10


def test_task_embeddings_and_region_boxes_are_written_into_the_prompt():
    heads = TaskHeads({"region": _Head()}, hidden_size=4, token_ids={"region": 7}, region_token_id=9)
    ids = torch.tensor([[1, 9, 2, 7], [9, 9, 7, 0]])
    embeds = torch.zeros(2, 4, 4)
    boxes = [torch.tensor([[0.1, 0.1, 0.2, 0.2]]), torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4]])]
    out = heads.write_task_embeddings(embeds, ids, boxes)
    task = heads.task_embeddings.weight[0]
    assert torch.equal(out[0, 3], task) and torch.equal(out[1, 2], task)
    assert torch.allclose(out[0, 1], torch.full((4,), 6.0)) and torch.allclose(out[1, 1], torch.full((4,), 10.0))
    assert torch.equal(out[0, 0], embeds[0, 0])
    with pytest.raises(ValueError, match="s2: 2 <region> placeholders for 1 input_boxes"):
        heads.write_task_embeddings(embeds, ids, [boxes[0], boxes[0]], ids=["s1", "s2"])


def test_region_head_learns_a_box_and_scores_it():
    from lrc_plugins.heads.region import RegionHead

    torch.manual_seed(0)
    head = RegionHead(hidden_size=16, mlp_hidden=32)
    hidden = torch.randn(4, 16)
    gold = [{"box": torch.tensor(b)} for b in ([0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9],
                                               [0.0, 0.2, 0.3, 0.6], [0.6, 0.1, 0.8, 0.3])]
    hb = HeadBatch(hidden, [], [], [], [], torch.ones(4), targets=gold)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    before = head.metrics(head.decode(head(hb), hb), gold)
    for _ in range(200):
        loss = head.loss(head(hb), hb)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = head.metrics(head.decode(head(hb), hb), gold)
    assert sum(after["miou"]) / 4 > 0.8 > sum(before["miou"]) / 4
    assert after["acc@0.5"] == [1.0] * 4
    assert head.encode_box(torch.rand(3, 4)).shape == (3, 16)
    # hand case: a box half the gold's area, inside it
    m = head.metrics([{"box": [0.0, 0.0, 0.5, 1.0]}], [{"box": torch.tensor([0.0, 0.0, 1.0, 1.0])}])
    assert m == {"miou": [0.5], "acc@0.5": [1.0]}


def test_head_config_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["model.heads.temporal.name=cgdetrr", "model.heads.a.name=region",
                                    "model.heads.b.name=region", "loss.head_weights.nope=1.0",
                                    "loss.dpo_weight=1.0", "loss.dpo_reference=lora_disabled"]))
    text = str(err.value)
    assert "model.heads.temporal.name" in text and "cgdetr" in text  # close match offered
    assert "second head for task 'region'" in text
    assert "loss.head_weights.nope" in text
    assert "lora_disabled needs LoRA" in text


def test_heads_are_removable_by_yaml_alone():
    cfg = validate(load_config(DEMO, ["model.heads.region.name=region", "model.heads.region=null"]))
    assert cfg["model"]["heads"] == {"region": None}
    from lrc.config import head_slots

    assert head_slots(cfg) == {}


def test_under_lora_the_heads_token_rows_train_and_no_other_row(tiny_overrides):
    """With LoRA the LLM's own weights are frozen, yet it must learn to emit the routing tokens: their
    embedding rows (input and, untied, output) stay trainable through peft's trainable tokens."""
    import lightning as L

    from lrc.train.build import build_model, build_tokenizer

    cfg = validate(load_config(DEMO, [*tiny_overrides, "model.heads.region={name: region, mlp_hidden: 16}",
                                      "model.llm.lora={r: 4}", "model.llm.config.tie_word_embeddings=false"]))
    L.seed_everything(0, verbose=False)
    tok = build_tokenizer(cfg)
    model = build_model(cfg, tok)
    new = sorted(tok.convert_tokens_to_ids(t) for t in ("<box>", "<box_begin>", REGION_PLACEHOLDER))
    llm = model.llm.model
    before_in = llm.get_input_embeddings().token_adapter.base_layer.weight.detach().clone()
    before_out = llm.get_output_embeddings().token_adapter.base_layer.weight.detach().clone()
    trainable = [n for n, p in llm.named_parameters() if p.requires_grad and "lora_" not in n]
    assert len(trainable) == 2 and all("trainable_tokens_delta" in n for n in trainable)

    params = [p for p in llm.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=1.0)
    ids = torch.tensor([[1, new[1], 5, new[0]]])
    logits = model.llm(inputs_embeds=model.llm.embed(ids)).logits
    torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor([new[1], 5, new[0]])).backward()
    optim.step()
    merged = llm.merge_and_unload()
    for after, before in ((merged.get_input_embeddings().weight, before_in),
                          (merged.get_output_embeddings().weight, before_out)):
        changed = (after - before).abs().sum(1).nonzero().flatten().tolist()
        assert changed and set(changed) <= set(new), changed
