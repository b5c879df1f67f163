"""The built-in synthetic video corpus (``lrc data synth``): real MP4 files with questions and TPO tasks.

``scenes`` draws and encodes one video; ``corpus`` writes a whole corpus (train/val JSONL, videos,
tokenizer); ``needle`` writes needle-in-a-haystack videos for ``lrc niah``.
"""

from lrc.data.synth.corpus import TASKS, build_corpus_tokenizer, parse_tasks, synthesize

__all__ = ["TASKS", "build_corpus_tokenizer", "parse_tasks", "synthesize"]
