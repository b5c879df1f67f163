"""lrc inside other tools (the top layer: no lrc module imports it). ``lmms_eval``: lrc models as an lmms-eval model
class (docs/evaluation.md). Each module needs its tool installed (``pip install "lrc-video[eval]"``)."""
