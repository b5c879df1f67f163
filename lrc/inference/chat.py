"""Chatting with a video: :class:`VideoChat`, what ``lrc.load`` returns (docs/inference.md).

A video (a file, or decoded frames) is sampled and resized as the model was trained (the config's sampler
and the encoder's size and normalisation), encoded once per video (the model streams long videos through
the encoder a chunk of clips at a time), laid out in the model's prompt format with the conversation so
far, and answered by lrc/model/generation.py: KV-cached, greedy or sampled, stopping at the end of the
turn, EOS or a stop string, with TPO heads decoding spans, boxes and masks where the answer routes to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lrc.data.prompt import VIDEO_PLACEHOLDER, PromptBuilder, PromptError
from lrc.errors import LrcError
from lrc.inference.results import ChatResult, structured
from lrc.model.generation import Sampling, generate
from lrc.train.build import build_prompt, build_sampler, task_token_map


class InferenceError(LrcError, ValueError):
    """A chat or inference request that cannot be answered as given (the message says what to change)."""


@dataclass
class Video:
    frames: np.ndarray  # uint8 [T, S, S, 3], the sampled frames at the encoder's size
    timestamps: np.ndarray  # seconds [T]
    duration: float  # seconds
    size: tuple[int, int] | None  # (H, W) of the source frames, for masks at the video's own size
    indices: np.ndarray  # the sampled frame indices [T]


def read_video(source: Any, sampler: Any, image_size: int, fps: float | None = None,
               timeout_s: float | None = None) -> Video:
    """Sample ``source`` — a video file path, or decoded frames (``[N, H, W, 3]`` uint8 array / tensor, all the
    frames of a clip at ``fps``, default 1) — with ``sampler`` and resize the samples to ``image_size``."""
    from lrc.data.video import VideoFile, VideoReadError

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InferenceError(f"video {path} does not exist (give a video file or decoded frames)")
        try:
            with VideoFile(path, size=image_size, timeout_s=timeout_s) as video:
                indices, timestamps = sampler(video.num_frames, video.fps, video.duration)
                # as in training: nearby key frames where the sampler allows it, with their own indices and times
                got = video.read(indices, exact=getattr(sampler, "exact", True))
                timestamps = np.where(got.indices != np.asarray(indices), got.timestamps, timestamps)
                frames, indices = got.frames, got.indices
                duration = float(video.duration)
            with VideoFile(path, timeout_s=timeout_s) as native:  # one frame at the file's own size
                size = tuple(native.get_frames([int(indices[0])]).shape[1:3])
        except VideoReadError as exc:
            raise InferenceError(f"cannot read video {path}: {exc.reason}") from exc
        return Video(np.ascontiguousarray(frames), np.asarray(timestamps, dtype=np.float64), duration, size,
                     np.asarray(indices))
    array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if array.ndim != 4 or 3 not in (array.shape[-1], array.shape[1]):
        raise InferenceError(f"decoded frames must be [N, H, W, 3] (or [N, 3, H, W]), got shape {array.shape}")
    if array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        if array.max(initial=0) <= 1.0:
            array = array * 255
        array = np.clip(array, 0, 255).astype(np.uint8)
    rate = float(fps or 1.0)
    indices, timestamps = sampler(array.shape[0], rate, array.shape[0] / rate)
    picked = torch.from_numpy(np.ascontiguousarray(array[np.asarray(indices)])).permute(0, 3, 1, 2).float()
    if picked.shape[-2:] != (image_size, image_size):
        picked = torch.nn.functional.interpolate(picked, size=(image_size, image_size), mode="bilinear",
                                                 antialias=True, align_corners=False)
    frames = picked.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return Video(frames, np.asarray(timestamps, dtype=np.float64), array.shape[0] / rate, tuple(array.shape[1:3]),
                 np.asarray(indices))


class VideoChat:
    """A loaded model ready to answer questions about videos (``lrc.load(PATH)``)."""

    def __init__(self, cfg: dict[str, Any], tokenizer: Any, model: torch.nn.Module, device: torch.device,
                 source: str = ""):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.source = source
        self.prompts = PromptBuilder(tokenizer, model.tokens_per_frame, task_tokens=task_token_map(cfg),
                                     prompt=build_prompt(cfg))
        self.clip_len = getattr(model.compressor, "clip_len", 1)
        self._sampler = build_sampler(cfg, clip_len=self.clip_len)
        self._encoded: tuple[Any, Any] | None = None  # (key, (video, visual, frames)) of the last video

    def __repr__(self) -> str:
        return (f"VideoChat({self.source or 'model'}: prompt {self.cfg['model']['prompt']['name']}, "
                f"{self.model.tokens_per_frame} tokens/frame, heads {list(self.tasks)}, device {self.device})")

    @property
    def tasks(self) -> list[str]:
        return list(self.model.heads.tasks) if self.model.heads is not None else []

    def sampler(self, num_frames: int | None) -> Any:
        """The config's frame sampler, or ``uniform`` with ``num_frames`` (best a multiple of the compressor's
        clip_len: a last partial clip is completed by repeating its last frame, VideoMLLM.compress)."""
        if num_frames is None:
            return self._sampler
        if num_frames < 1:
            raise InferenceError(f"num_frames={num_frames}: ask for at least one frame")
        from lrc.registry import SAMPLERS

        return SAMPLERS.get("uniform")(num_frames=num_frames)

    def encode(self, video: Any, num_frames: int | None = None, fps: float | None = None) -> tuple[Video, Any, Any]:
        """(the sampled video, its visual embeddings [T·k, D], its frames RGB in [0, 1]); the last video is kept,
        so follow-up questions about it are not encoded again. ``video`` may also be a :class:`Video` sampled
        already (frames at the encoder's size), which is encoded as it is."""
        key = (str(video), num_frames, fps) if isinstance(video, (str, Path)) else (id(video), num_frames, fps)
        if self._encoded is not None and self._encoded[0] == key:
            return self._encoded[1]
        if isinstance(video, Video):  # sampled already (a benchmark's own frame selection, lrc/evaluation/runner.py);
            sampled = video  # the cache keeps it alive, so its id is not reused while it is the key
        else:
            sampled = read_video(video, self.sampler(num_frames), self.model.encoder.image_size, fps,
                                 self.cfg["data"].get("read_timeout_s"))
        pixels = torch.from_numpy(sampled.frames).permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.model.encoder.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.model.encoder.std).view(1, 3, 1, 1)
        dtype = next(self.model.parameters()).dtype
        pixels = ((pixels - mean) / std).to(self.device, dtype)
        with torch.no_grad():
            visual = self.model.encode_video(pixels, [pixels.shape[0]])[0]
            frames = self.model.frames(pixels, [pixels.shape[0]])[0].float()
        self._encoded = (key, (sampled, visual, frames))
        return sampled, visual, frames

    def chat(self, video: Any, question: str, history: Sequence[tuple[str, str]] | None = None, *,
             max_new_tokens: int = 256, num_frames: int | None = None, fps: float | None = None,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             stop: Sequence[str] = (), seed: int | None = None, input_boxes: Sequence[Sequence[float]] | None = None,
             use_cache: bool = True) -> ChatResult:
        """Answer ``question`` about ``video`` (a path, or decoded frames at ``fps``), after ``history`` (the
        ``(question, answer)`` turns so far, e.g. the previous result's ``.history``).

        ``num_frames`` overrides the config's sampler with that many uniformly sampled frames; ``do_sample``,
        ``temperature``, ``top_p``, ``top_k`` and ``seed`` choose sampling over greedy decoding; ``stop``:
        strings that end the answer (besides the end of the turn and EOS); ``input_boxes``: one normalised
        ``[x1, y1, x2, y2]`` per ``<region>`` in the question (with a box-reading head)."""
        if not isinstance(question, str) or not question.strip():
            raise InferenceError("ask a question: a non-empty string")
        if max_new_tokens < 1:
            raise InferenceError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        sampled, visual, frames = self.encode(video, num_frames, fps)
        turns: list[dict[str, str]] = []
        for q, a in history or ():
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        turns.append({"from": "human", "value": question})
        if not any(VIDEO_PLACEHOLDER in t["value"] for t in turns if t["from"] == "human"):
            turns[0] = {"from": "human", "value": f"{VIDEO_PLACEHOLDER}\n{turns[0]['value']}"}
        try:
            enc = self.prompts.generation_prompt(turns, sampled.duration, len(sampled.frames))
        except PromptError as exc:
            raise InferenceError(str(exc)) from exc
        boxes = torch.tensor(input_boxes, dtype=torch.float32).reshape(-1, 4) if input_boxes else None
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        sampling = Sampling(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        stop_ids = [self.prompts.turn_end_id] + ([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None
                                                 else [])
        stops = [s for s in stop if s]
        window = max((len(self.prompts.encode(s)) for s in stops), default=0) + 2

        def stopped(ids: list[int]) -> bool:
            return bool(stops) and any(s in self.tokenizer.decode(ids[-window:], skip_special_tokens=True) for s in stops)

        try:
            out = generate(self.model, enc.input_ids, visual, frames=frames,
                           timestamps=torch.as_tensor(sampled.timestamps, dtype=torch.float32),
                           duration=sampled.duration, query_positions=enc.query_positions, input_boxes=boxes,
                           max_new_tokens=max_new_tokens, stop_ids=stop_ids, stop=stopped if stops else None,
                           sampling=sampling, use_cache=use_cache)
        except ValueError as exc:  # e.g. <region> placeholders without boxes: the model's own message
            raise InferenceError(str(exc)) from exc
        text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
        for s in stops:
            text = text.split(s)[0]
        text = text.strip()
        spans, box_list, masks = structured(out.heads, [float(t) for t in sampled.timestamps], sampled.size)
        return ChatResult(text=text, question=question, spans=spans, boxes=box_list, masks=masks,
                          history=[*(history or ()), (question, text)], token_ids=out.token_ids, heads=out.heads,
                          timestamps=[float(t) for t in sampled.timestamps], duration=sampled.duration)
