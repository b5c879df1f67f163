"""lrc models in lmms-eval: ``--model lrc --model_args path=RUN`` (docs/evaluation.md, "lmms-eval").

    python -m lrc.integrations.lmms_eval --model lrc --model_args path=runs/demo-tiny/RUN,num_frames=16 \\
        --tasks mvbench --batch_size 1 --output_path runs/lmms-eval
    lmms-eval --model lrc --model_args path=RUN --tasks videomme      # the same, once lrc-video[eval] is installed

:class:`LrcVideoModel` is an ``lmms_eval.api.model.lmms`` registered under the name ``lrc`` in lmms-eval's own
registries: its model registry (``register_model``), and its model manifests, through the ``lmms_eval.models``
entry point that lrc's pyproject.toml declares (what ``lmms-eval --model lrc`` resolves) and, for a process that
imports this module before lmms-eval's registry was built, :func:`register`. ``python -m lrc.integrations.lmms_eval``
registers it and runs lmms-eval's own command line with the rest of the arguments.

``model_args`` (comma-separated ``key=value``, lmms-eval's syntax): ``path`` (what ``lrc.load`` reads: a run dir,
an ``lrc export`` folder, an InternVL2.5 / InternVideo2.5 folder; required), ``num_frames`` (frames sampled
uniformly; default: the model config's sampler), ``device`` (``auto``), ``dtype``, ``overrides`` (lrc config
changes, ``;``-separated: ``overrides=data.sampler.num_frames=32;model.token_dropout.enabled=true``).

* ``generate_until``: each request's visual (a video file path, a frame folder, or PIL images as frames) and its
  text go through ``VideoChat.chat`` (the model's prompt format, KV-cached greedy or sampled decoding); the task's
  ``until`` strings stop the answer, ``max_new_tokens`` / ``temperature`` / ``top_p`` / ``do_sample`` are honoured.
* ``loglikelihood``: for each request ``(-log p(continuation | video, prompt), greedy)``: the continuation's summed
  negative log-likelihood after the prompt (the assistant's turn opened by the model's prompt format), teacher-forced
  in one forward, and whether greedy decoding would produce it. The sign is lmms-eval's convention, whatever its
  docstring says: its models return the loss and its ``multiple_choice`` scoring picks the option with the smallest
  value (``np.argmin``). Token dropout is not applied (it is an inference-time saving of generation).
* ``generate_until_multi_round``: not supported (an error says so).

Several processes (``accelerate launch`` / ``torchrun``): each takes the rank and world size of its environment and
the GPU of its LOCAL_RANK; lmms-eval shards the requests.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

log = logging.getLogger("lrc")

MODEL_NAME = "lrc"
CLASS_PATH = "lrc.integrations.lmms_eval.LrcVideoModel"


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: how lmms-eval's model registry finds this class."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH)


def register() -> None:
    """Add ``lrc`` to lmms-eval's model manifests (needed only where the entry point is not installed, e.g. a
    source checkout that was not ``pip install``-ed again after pulling)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)


def _frames_of(visual: Any) -> Any:
    """A request's visual as what ``VideoChat.chat`` reads: a path stays a path; PIL images become frames."""
    import numpy as np

    if isinstance(visual, (str, Path)):
        return str(visual)
    if isinstance(visual, dict) and "path" in visual:
        return str(visual["path"])
    images = visual if isinstance(visual, (list, tuple)) else [visual]
    if all(hasattr(img, "convert") for img in images):
        first = images[0].convert("RGB")
        size = first.size
        return np.stack([np.asarray(img.convert("RGB").resize(size)) for img in images])
    raise ValueError(f"lrc's lmms-eval model reads a video path or PIL images; got {type(visual).__name__}")


@register_model(MODEL_NAME)
class LrcVideoModel(lmms):
    """A model lrc can load (``lrc.load(path)``), answering lmms-eval's requests."""

    def __init__(self, path: str, num_frames: int | None = None, device: str | None = "auto", dtype: str | None = None,
                 overrides: str = "", batch_size: int | str = 1, **unused: Any):
        super().__init__()
        import lrc

        if int(batch_size) != 1:
            raise ValueError(f"batch_size={batch_size}: lrc's lmms-eval model answers one request at a time (1)")
        if unused:
            log.warning("lrc lmms-eval model: ignoring model_args %s", sorted(unused))
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        if device in (None, "auto") and self._world_size > 1 and "LOCAL_RANK" in os.environ:
            import torch

            device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "auto"
        self.num_frames = int(num_frames) if num_frames not in (None, "", "None") else None
        self.chat = lrc.load(path, device=device or "auto", dtype=dtype or None,
                             overrides=[o for o in str(overrides or "").split(";") if o.strip()])
        self.path = path

    # lmms-eval reads these
    @property
    def batch_size(self) -> int:
        return 1

    @property
    def device(self) -> Any:
        return self.chat.device

    def _visual(self, request: Instance) -> Any:
        doc_to_visual, doc_id, task, split = request.args[2:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if callable(doc_to_visual) else doc_to_visual
        visuals = [v for v in (visuals or []) if v is not None]
        if not visuals:
            raise ValueError(f"{task} doc {doc_id}: lrc's video models need a visual; the task gives none")
        if all(hasattr(v, "convert") for v in visuals):  # images: the frames of one clip
            return _frames_of(visuals)
        if len(visuals) > 1:
            log.warning("%s doc %s: %d visuals; lrc answers about the first", task, doc_id, len(visuals))
        return _frames_of(visuals[0])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        for request in requests:
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(gen_kwargs.get("temperature") or 0.0)
            sample = bool(gen_kwargs.get("do_sample")) and temperature > 0
            result = self.chat.chat(self._visual(request), context, num_frames=self.num_frames,
                                    max_new_tokens=int(gen_kwargs.get("max_new_tokens") or 256), stop=until,
                                    do_sample=sample, temperature=temperature if sample else 1.0,
                                    top_p=float(gen_kwargs.get("top_p") or 1.0) if sample else 1.0)
            out.append(result.text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), result.text)
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            context, target = request.args[0], request.args[1]
            doc_id, task, split = request.args[3:6]
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            logprob, greedy = continuation_logprob(self.chat, self._visual(request), context, continuation,
                                                   self.num_frames)
            out.append((-logprob, greedy))  # lmms-eval's convention: the loss; multiple_choice takes the argmin
        return out

    def generate_until_multi_round(self, requests: Sequence[Instance]) -> list[str]:
        raise NotImplementedError("lrc's lmms-eval model answers single-round tasks (generate_until, loglikelihood)")


def continuation_logprob(chat: Any, video: Any, context: str, continuation: str,
                         num_frames: int | None = None) -> tuple[float, bool]:
    """(log p(continuation | video, context), whether greedy decoding gives exactly it): the prompt as
    ``VideoChat.chat`` lays it out, the continuation's tokens appended, one teacher-forced forward."""
    import torch

    from lrc.data.prompt import VIDEO_PLACEHOLDER

    sampled, visual, _ = chat.encode(video, num_frames)
    question = context if VIDEO_PLACEHOLDER in context else f"{VIDEO_PLACEHOLDER}\n{context}"
    prompt = chat.prompts.generation_prompt([{"from": "human", "value": question}], sampled.duration,
                                            len(sampled.frames)).input_ids
    target = chat.prompts.encode(continuation)
    if not target:
        return 0.0, True
    model = chat.model
    ids = torch.tensor([list(prompt) + list(target)], device=visual.device)
    with torch.no_grad():
        embeds = model.splice(ids, [visual])
        if model.heads is not None:
            embeds = model.heads.write_task_embeddings(embeds, ids)
        logits = model.llm(inputs_embeds=embeds).logits[0, len(prompt) - 1: -1].float()
    wanted = torch.tensor(target, device=logits.device)
    logprobs = logits.log_softmax(-1).gather(1, wanted[:, None])[:, 0]
    return float(logprobs.sum()), bool((logits.argmax(-1) == wanted).all())


def main(argv: list[str] | None = None) -> None:
    """``python -m lrc.integrations.lmms_eval ARGS``: lmms-eval's command line with ``--model lrc`` available."""
    from lmms_eval.__main__ import cli_evaluate

    register()
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
