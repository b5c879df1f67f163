"""Prompt formats against the templates they restate: ``internvl2_5`` gives exactly the token sequence the
released InternVL2.5 / InternVideo2.5 chat produces (InternVL's conversation template and its ``chat()``,
restated below), for three kinds of tokenizer."""

from __future__ import annotations

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lrc.data.prompt import PromptBuilder, prepare_tokenizer
from lrc.registry import PROMPTS

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
TEXT = ["What colour is the square? The square is red.", "Describe this video in detail.", "Frame1: Frame2: Frame12:",
        "system user assistant", "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
        "How many objects move left? Two of them, the circle and the triangle."]


# -- the reference: InternVL's internvl2_5 conversation template (MPT style) and the chat model's chat() ------------
def internvl_chat_query(question: str, num_frames: int, num_image_token: int, history=(),
                        system="你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"):
    """The query string InternVideo2.5's chat() tokenizes: the released video usage puts "FrameN: <image>\\n" per
    frame before the question; the template is system_template + sep, then role + message + sep per message,
    and the open assistant role; each <image> becomes <img> + <IMG_CONTEXT> x num_image_token + </img>."""
    sep = "<|im_end|>\n"
    roles = ("<|im_start|>user\n", "<|im_start|>assistant\n")
    messages = []
    for old_q, old_a in history:
        messages += [(roles[0], old_q), (roles[1], old_a)]
    first = "".join(f"Frame{i + 1}: <image>\n" for i in range(num_frames)) + question
    if history:  # the video belongs to the first question
        messages[0] = (roles[0], first.replace(question, messages[0][1]))
        messages += [(roles[0], question), (roles[1], None)]
    else:
        messages += [(roles[0], first), (roles[1], None)]
    query = f"<|im_start|>system\n{system}" + sep
    for role, message in messages:
        query += role + message + sep if message else role
    for _ in range(num_frames):
        query = query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * num_image_token + "</img>", 1)
    return query


# -- tokenizers of three families, all with a BOS the tokenizer adds itself (InternLM2 adds <s>) -------------------
def _fast(tok: Tokenizer) -> PreTrainedTokenizerFast:
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=SPECIALS[3:], clean_up_tokenization_spaces=False)
    return prepare_tokenizer(fast, extra_tokens=("<img>", "</img>"))


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """Qwen2 / GPT-style: byte-level BPE."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _fast(tok)


def sentencepiece_like() -> PreTrainedTokenizerFast:
    """Llama / InternLM2-style: a metaspace ("▁") pre-tokenizer that marks only the start of the text, byte fallback."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(TEXT * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                          initial_alphabet=[f"<0x{i:02X}>" for i in range(256)]))
    return _fast(tok)


def word_level(corpus) -> PreTrainedTokenizerFast:
    """The demo corpus's word-level tokenizer, given a BOS."""
    base = AutoTokenizer.from_pretrained(str(corpus / "tokenizer"))
    return _fast(Tokenizer.from_str(base.backend_tokenizer.to_str()))


@pytest.fixture(params=["byte_level_bpe", "sentencepiece_like", "word_level"])
def tokenizer(request, corpus):
    return word_level(corpus) if request.param == "word_level" else globals()[request.param]()


def test_internvl2_5_is_the_released_token_sequence_for_a_two_frame_video(tokenizer):
    question = "What colour is the square?"
    prompts = PromptBuilder(tokenizer, tokens_per_frame=16, prompt=PROMPTS.get("internvl2_5")())
    ours = prompts.generation_prompt([{"from": "human", "value": f"<video>\n{question}"}], duration=3.0, num_frames=2)
    reference = tokenizer(internvl_chat_query(question, num_frames=2, num_image_token=16)).input_ids
    assert ours.input_ids == reference
    assert ours.input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode([ours.input_ids[p] for p in ours.query_positions]) == question
    assert ours.input_ids.count(prompts.img_context_id) == 32


def test_internvl2_5_multi_turn_matches_chat_with_history(tokenizer):
    prompts = PromptBuilder(tokenizer, tokens_per_frame=4, prompt=PROMPTS.get("internvl2_5")())
    turns = [{"from": "human", "value": "<video>\nDescribe this video in detail."},
             {"from": "gpt", "value": "The square is red."}, {"from": "human", "value": "How many objects move left?"}]
    ours = prompts.generation_prompt(turns, duration=3.0, num_frames=3)
    history = [("Describe this video in detail.", "The square is red.")]
    reference = tokenizer(internvl_chat_query("How many objects move left?", 3, 4, history=history)).input_ids
    assert ours.input_ids == reference


def test_chatml_keeps_lrcs_layout(corpus):
    from lrc.data.prompt import TIME_PREFIX

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(corpus / "tokenizer")))
    prompts = PromptBuilder(tok, tokens_per_frame=2, prompt=PROMPTS.get("chatml")())
    enc = prompts.generation_prompt([{"from": "human", "value": "<video>\nWhat colour is the square?"}], 3.0, 2)
    text = ("<|im_start|>user\n" + TIME_PREFIX.format(duration=3.0, num_frames=2) + "\nFrame1: <IMG_CONTEXT><IMG_CONTEXT>"
            "\nFrame2: <IMG_CONTEXT><IMG_CONTEXT>\nWhat colour is the square?<|im_end|>\n<|im_start|>assistant\n")
    assert enc.input_ids == tok(text, add_special_tokens=False).input_ids


def test_internvl2_5_finetune_layout_is_internvideo2_5s_training_prompt(tokenizer):
    """InternVideo2.5's finetuning code (unify_internvl2_train_r16.py) writes the time message stripped, then
    "FrameN: <image>" lines joined by newlines in place of the record's "<image>\\n", with the internvl2_5 template."""
    question, duration = "What colour is the square?", 3.0
    msg = f"\nThe video lasts for {duration:.2f} seconds, and 2 frames are uniformly sampled from it. "
    special = msg.strip() + "\n" + "\n".join(f"Frame{i + 1}: <image>" for i in range(2))
    user = f"<image>\n{question}".replace("<image>\n", special)
    system = PROMPTS.get("internvl2_5")().system_message
    query = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    for _ in range(2):
        query = query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * 4 + "</img>", 1)
    prompts = PromptBuilder(tokenizer, tokens_per_frame=4, prompt=PROMPTS.get("internvl2_5")(layout="finetune"))
    ours = prompts.generation_prompt([{"from": "human", "value": f"<video>\n{question}"}], duration, num_frames=2)
    assert ours.input_ids == tokenizer(query).input_ids
