"""Prompt building: the time prefix, FrameN lines, context slots and answer-only labels."""

import pytest
from transformers import AutoTokenizer

from lrc.data.prompt import IGNORE_INDEX, IMG_CONTEXT, TIME_PREFIX, PromptBuilder, PromptError, prepare_tokenizer

CONV = [
    {"from": "human", "value": "<video>\nWhat colour is the circle?\n(A) red\n(B) green\nAnswer with the option's letter from the given choices directly."},
    {"from": "gpt", "value": "B"},
]


@pytest.fixture(scope="module")
def prompts(corpus):
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(corpus / "tokenizer"))
    return PromptBuilder(tok, tokens_per_frame=3)


def _contains(seq, sub):
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_video_block_has_time_prefix_frame_lines_and_slots(prompts):
    enc = prompts.encode_conversation(CONV, duration=12.5, num_frames=4)
    prefix = "The video lasts for 12.50 seconds, and 4 frames are uniformly sampled from it."
    assert prefix == TIME_PREFIX.format(duration=12.5, num_frames=4)
    assert _contains(enc.input_ids, prompts.encode(prefix))
    for i in range(1, 5):
        assert _contains(enc.input_ids, prompts.encode(f"Frame{i}: ") + [prompts.img_context_id])
    assert not _contains(enc.input_ids, prompts.encode("Frame5: "))
    assert enc.input_ids.count(prompts.img_context_id) == 12 == enc.visual_slots
    # the slots come in runs of tokens_per_frame, one run per frame line
    runs, run = [], 0
    for t in enc.input_ids + [-1]:
        if t == prompts.img_context_id:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert runs == [3, 3, 3, 3]


def test_labels_cover_the_answer_and_end_of_turn_only(prompts):
    enc = prompts.encode_conversation(CONV, duration=3.0, num_frames=2)
    learned = [(i, t) for i, (t, l) in enumerate(zip(enc.input_ids, enc.labels)) if l != IGNORE_INDEX]
    assert [t for _, t in learned] == prompts.encode("B") + [prompts.im_end_id]
    assert learned[0][0] == enc.answer_start
    assert enc.input_ids[enc.answer_start] == prompts.option_ids(["B"])[0]


def test_multi_turn_learns_every_answer(prompts):
    conv = CONV + [{"from": "human", "value": "And the square?"}, {"from": "gpt", "value": "A"}]
    enc = prompts.encode_conversation(conv, duration=3.0, num_frames=2)
    learned = [t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE_INDEX]
    assert learned == prompts.encode("B") + [prompts.im_end_id] + prompts.encode("A") + [prompts.im_end_id]


@pytest.mark.parametrize("conv,needle", [
    ([{"from": "human", "value": "no placeholder"}, {"from": "gpt", "value": "A"}], "exactly one <video>"),
    ([{"from": "human", "value": "<video><video>"}, {"from": "gpt", "value": "A"}], "exactly one <video>"),
    ([{"from": "human", "value": "<video>"}], "no gpt turn"),
    ([{"from": "robot", "value": "<video>"}, {"from": "gpt", "value": "A"}], "from=human|gpt"),
])
def test_bad_conversations_name_the_sample(prompts, conv, needle):
    with pytest.raises(PromptError) as err:
        prompts.encode_conversation(conv, duration=3.0, num_frames=2, sample_id="s-7")
    assert "s-7" in str(err.value) and needle in str(err.value)


def test_prepare_tokenizer_adds_missing_specials(corpus, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "</s>": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>")
    before = len(tok)
    prepare_tokenizer(tok)
    assert len(tok) == before + 4
    assert len(tok(IMG_CONTEXT, add_special_tokens=False).input_ids) == 1
    assert tok.pad_token is not None
