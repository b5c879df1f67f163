"""``lrc infer PATH --data ANNOTATIONS --out PRED.jsonl``: batch inference, resumable (lrc/inference/batch.py)."""

from __future__ import annotations


def run(path: str, data: str, out: str, *, num_frames: int | None = None, max_new_tokens: int = 64,
        limit: int | None = None, restart: bool = False, progress: bool = True, device: str = "auto",
        dtype: str | None = None, overrides: list[str] | None = None) -> int:
    from lrc.inference.batch import infer
    from lrc.inference.loading import load

    chat = load(path, device=device, dtype=dtype, overrides=overrides or [])
    summary = infer(chat, data, out, max_new_tokens=max_new_tokens, num_frames=num_frames, limit=limit,
                    restart=restart, progress=progress)
    print(summary.text())
    return 0
