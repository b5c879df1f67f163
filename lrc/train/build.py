"""The one builder: a validated config in, objects out.

Order matters and is the only wiring in lrc:
  what model.init's checkpoint implies (the prompt format, the merge metric's width: resolve_implied)
  → prompt format (its special tokens join the tokenizer)
  → tokenizer (its length sizes the LLM's embeddings)
  → encoder (its out_dim feeds the compressor)
  → compressor (its out_dim feeds the projector; its tokens_per_frame sizes the prompt)
  → LLM (its hidden size is the projector's out_dim)
  → projector → VideoMLLM
  → data module (needs the tokenizer, tokens per frame and the encoder's image size/normalisation)
  → LightningModule (the optim.optimizer plugin, built from its parameter groups when Lightning asks)
  → the trainer's loggers and callbacks (run.loggers, run.callbacks; lrc/train/run.py builds the trainer).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lrc.errors import LrcError, MissingInputError
from lrc.config import (PLUGIN_SLOTS, ConfigError, check_args, head_slots, listed_slots, plugin_slots, slot_node,
                        token_dropout_schedule)
from lrc.model.mllm import VideoMLLM
from lrc.data.prompt import IMG_CONTEXT, REGION_PLACEHOLDER, PromptBuilder, prepare_tokenizer
from lrc.registry import CALLBACKS, HEADS, LOGGERS, OPTIMIZERS, PROMPTS, PluginBuildError, Registry, origin

log = logging.getLogger(__name__)


def instantiate(registry: Registry, node: dict[str, Any], **provided: Any) -> Any:
    """Construct the plugin a config slot names, with builder-provided values added."""
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    name = node.pop("name")
    cls = registry.get(name)
    # A plugin receives only the provided values its signature asks for (a sampler that rounds to
    # the compressor's clip_len takes `clip_len`; one that does not, does not).
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {**node, **{k: v for k, v in provided.items() if takes_any or k in params}}
    # the arguments against the constructor's annotations (types, ranges, choices), as `lrc validate` checks
    # the config's: the constructor itself keeps only the checks an annotation cannot express
    problems = check_args(cls, args)
    if problems:
        raise ConfigError([f"{registry.kind} plugin {name!r}: {key}: {what}" for key, what in problems])
    try:
        return cls(**args)
    except LrcError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin's constructor, named for the user
        # A value only the built objects can refute (tome's head_dim against the encoder's width), or a
        # third-party plugin that fails in its own way: the message names the plugin, its kind and the
        # package it came from, so the user knows whose code to look at (exit 2; --debug shows the traceback).
        dist, version = registry.package_of(name)
        what = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise PluginBuildError(f"{registry.kind} plugin {name!r} ({origin(cls)}, package {dist} {version}) could "
                               f"not be built: {what}") from exc


def resolve_implied(cfg: dict[str, Any], loaded: Any = None) -> dict[str, Any]:
    """Settings without weights that model.init's checkpoint decides (lrc.weights.pretrained.implied_settings),
    written into ``cfg`` (in place; calling it again changes nothing): ``model.prompt`` when it is null (then
    ``chatml`` when nothing implies another), and tome's ``head_dim`` / ``restore_order`` unless the experiment
    set them itself (``loaded``: the LoadedConfig, which knows where each key came from; without it a value
    still at tome's default counts as not set). A value the experiment set otherwise is kept, with a warning."""
    from lrc.config import plugin_defaults
    from lrc.weights.pretrained import implied_settings

    model = cfg["model"]
    init = model.get("init") or {}
    implied = implied_settings(init["path"], init.get("layout") or "auto") if init.get("path") else []
    for item in implied:
        if item.key == "model.prompt":
            if model.get("prompt") is None:
                model["prompt"] = dict(item.value)
                log.info("model.prompt: %s (%s)", item.value["name"], item.why)
            elif model["prompt"].get("name") != item.value["name"]:
                log.warning("model.prompt is %r but %s: %s; the config's format is used", model["prompt"].get("name"),
                            init["path"], item.why)
            continue
        compressor = model["compressor"]
        name = item.key.rsplit(".", 1)[1]
        if compressor.get("name") != "tome" or compressor.get(name) == item.value:
            continue
        if loaded is not None:
            explicit = loaded.source(item.key) != "defaults"
        else:
            default = plugin_defaults(PLUGIN_SLOTS["model.compressor"].get("tome")).get(name)
            explicit = name in compressor and compressor[name] != default
        if explicit:
            log.warning("%s=%r, but %s implies %r: %s. The config's value is used", item.key, compressor.get(name),
                        init["path"], item.value, item.why)
        else:
            compressor[name] = item.value
            log.info("%s=%r from %s: %s", item.key, item.value, init["path"], item.why)
    if model.get("prompt") is None:
        model["prompt"] = {"name": "chatml"}
    node = model["prompt"]
    if isinstance(node, dict) and node.get("name") in PROMPTS:
        for key, value in plugin_defaults(PROMPTS.get(node["name"])).items():
            node.setdefault(key, value)
    return cfg


def build_prompt(cfg: dict[str, Any]) -> Any:
    """The prompt format (a ``prompts`` plugin, lrc.protocols.PromptFormat) of ``model.prompt``."""
    resolve_implied(cfg)
    return instantiate(PROMPTS, cfg["model"]["prompt"])


def corpus_root(cfg: dict[str, Any]) -> Path:
    return Path(cfg["data"]["root"])


def build_tokenizer(cfg: dict[str, Any]) -> Any:
    path = (cfg["data"].get("tokenizer") or cfg["model"]["llm"].get("pretrained") or init_tokenizer(cfg)
            or corpus_root(cfg) / "tokenizer")
    if not Path(path).exists():
        raise MissingInputError(
            f"tokenizer folder {path} does not exist. Set data.tokenizer, give model.llm.pretrained, or create the "
            f"corpus with `lrc data synth {corpus_root(cfg)}` (or data.synth_videos) which writes one.")
    extra = head_tokens(cfg) + list(build_prompt(cfg).special_tokens)
    from lrc.weights.checkpoints import load_tokenizer  # refuses a folder whose tokenizer is its own code

    return prepare_tokenizer(load_tokenizer(path), extra_tokens=extra)


def init_tokenizer(cfg: dict[str, Any]) -> str | None:
    """The tokenizer that came with model.init's checkpoint: a model folder's own files, or an lrc
    export's tokenizer/ (so a model keeps the token ids its embeddings were trained with)."""
    path = ((cfg["model"].get("init") or {}).get("path")) or ""
    for folder in (Path(path), Path(path) / "tokenizer"):
        if path and (folder / "tokenizer_config.json").is_file():
            return str(folder)
    return None


def head_classes(cfg: dict[str, Any]) -> dict[str, Any]:
    """Head label -> head class, without building anything."""
    return {slot.split(".")[-1]: HEADS.get(slot_node(cfg, slot)["name"]) for slot in head_slots(cfg)}


def head_tokens(cfg: dict[str, Any]) -> list[str]:
    """The tokens the configured TPO heads need in the vocabulary (task, routing, <region>)."""
    tokens = []
    for cls in head_classes(cfg).values():
        tokens += [cls.task_token, cls.begin_token]
        if hasattr(cls, "encode_box"):
            tokens.append(REGION_PLACEHOLDER)
    return tokens


def task_token_map(cfg: dict[str, Any]) -> dict[str, str]:
    """Each head's task token -> its routing token (how answers are encoded, lrc/data/prompt.py)."""
    return {cls.task_token: cls.begin_token for cls in head_classes(cfg).values()}


def build_sampler(cfg: dict[str, Any], clip_len: int = 1) -> Any:
    return instantiate(PLUGIN_SLOTS["data.sampler"], cfg["data"]["sampler"], clip_len=clip_len)


def build_model(cfg: dict[str, Any], tokenizer: Any) -> VideoMLLM:
    resolve_implied(cfg)
    m = cfg["model"]
    encoder = instantiate(PLUGIN_SLOTS["model.encoder"], m["encoder"])
    compressor = instantiate(PLUGIN_SLOTS["model.compressor"], m["compressor"], in_dim=encoder.out_dim,
                             frame_tokens=encoder.num_tokens)
    # the TPO heads' tokens: under LoRA their embedding rows stay trainable (hf_causal_lm.wrap_lora)
    new_token_ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in head_tokens(cfg))
    llm = instantiate(PLUGIN_SLOTS["model.llm"], m["llm"], vocab_size=len(tokenizer), new_token_ids=new_token_ids)
    projector = instantiate(PLUGIN_SLOTS["model.projector"], m["projector"],
                            in_dim=compressor.out_dim, out_dim=llm.hidden_size)
    schedule = token_dropout_schedule(cfg)
    if schedule is not None:
        if not hasattr(llm, "forward_with_token_dropout"):
            raise ValueError(f"model.token_dropout is enabled but llm plugin {m['llm']['name']!r} does not support "
                             "token dropout (it has no forward_with_token_dropout); disable it")
        problems = schedule.problems(getattr(llm, "num_layers", None))
        if problems:
            raise ValueError("model.token_dropout: " + "; ".join(problems))
    model = VideoMLLM(encoder, compressor, projector, llm, img_context_id=tokenizer.convert_tokens_to_ids(IMG_CONTEXT),
                      token_dropout=schedule, heads=build_heads(cfg, tokenizer, llm.hidden_size))
    # model.init: weights from an lrc run/export or an InternVL checkpoint, over the built model
    # (lrc/weights/pretrained.py; how stage 2 starts from stage 1, docs/checkpoints.md)
    from lrc.weights.pretrained import apply_init

    apply_init(model, m.get("init"))
    return model


def build_heads(cfg: dict[str, Any], tokenizer: Any, hidden_size: int) -> Any:
    """TPO's TaskHeads (lrc/model/tpo.py) keyed by each head's task, or None when no head is configured."""
    from lrc.model.tpo import TaskHeads

    heads, labels = {}, {}
    for slot in head_slots(cfg):
        head = instantiate(HEADS, slot_node(cfg, slot), hidden_size=hidden_size)
        heads[head.task], labels[head.task] = head, slot.split(".")[-1]
    if not heads:
        return None
    ids = {task: tokenizer.convert_tokens_to_ids(h.task_token) for task, h in heads.items()}
    begins = {task: tokenizer.convert_tokens_to_ids(h.begin_token) for task, h in heads.items()}
    region = tokenizer.convert_tokens_to_ids(REGION_PLACEHOLDER) if REGION_PLACEHOLDER in head_tokens(cfg) else None
    return TaskHeads(heads, hidden_size, ids, begin_ids=begins, region_token_id=region, labels=labels)


def build_data(cfg: dict[str, Any], tokenizer: Any, model: VideoMLLM) -> Any:
    from lrc.data.dataset import VideoDataModule
    from lrc.data.mixture import sources_of

    d = cfg["data"]
    root = corpus_root(cfg)
    return VideoDataModule(
        # a path or a mixture (a list of sources), paths under data.root (lrc/data/mixture.py)
        train_file=sources_of(d["train"], root, "train"), val_file=sources_of(d["val"], root, "val"),
        frame_folder_fps=d["frame_folder_fps"],
        media_root=root, allow_outside_root=d["allow_outside_root"],  # where media may be (lrc/data/paths.py)
        sampler=build_sampler(cfg, clip_len=getattr(model.compressor, "clip_len", 1)),
        prompts=PromptBuilder(tokenizer, model.tokens_per_frame, task_tokens=task_token_map(cfg), prompt=build_prompt(cfg)),
        image_size=model.encoder.image_size, mean=model.encoder.mean, std=model.encoder.std,
        batch_size=d["batch_size"], eval_batch_size=d["eval_batch_size"], num_workers=d["num_workers"],
        threads=cfg["run"].get("threads"),  # workers and decoder threads follow run.threads (lrc/cpus.py)
        max_length=d["max_length"], cache_frames=d["cache_frames"], pad_id=tokenizer.pad_token_id,
        tasks=d["tasks"], read_timeout_s=d["read_timeout_s"], max_bad_fraction=d["max_bad_fraction"],
        seed=cfg["run"]["seed"],
        packing={k: v for k, v in d["packing"].items() if k != "enabled"} if d["packing"].get("enabled") else None,
        sequence_parallel=getattr(model.llm, "sequence_parallel", 1),
    )


def build_module(cfg: dict[str, Any], model: VideoMLLM) -> Any:
    """The LightningModule; its optimizer is ``optim.optimizer``, built from the parameter groups when Lightning
    asks for it."""
    import torch

    from lrc.train.module import VideoMLLMModule

    o = cfg["optim"]

    def optimizer(groups: list[dict[str, Any]]) -> Any:
        return _of_type(instantiate(OPTIMIZERS, o["optimizer"], params=groups), torch.optim.Optimizer, OPTIMIZERS,
                        o["optimizer"]["name"], "a torch.optim.Optimizer")

    return VideoMLLMModule(model, lr=o["lr"], freeze=o["freeze"], weight_decay=o["weight_decay"], optimizer=optimizer,
                           schedule=o["schedule"], warmup_ratio=o["warmup_ratio"], min_lr_ratio=o["min_lr_ratio"],
                           loss=cfg["loss"], on_nan=cfg["run"]["on_nan"])


def build_loggers(cfg: dict[str, Any], run_dir: Path) -> list[Any]:
    """``run.loggers``, writing under RUN_DIR/logs; an MLflow or W&B run is named ``run.name/<run folder>``."""
    from lightning.pytorch.loggers import Logger

    provided = dict(save_dir=str(run_dir / "logs"), run_name=f"{cfg['run']['name']}/{run_dir.name}")
    return [_of_type(instantiate(LOGGERS, _as_slot(node), **provided), Logger, LOGGERS, _as_slot(node)["name"],
                     "a lightning.pytorch.loggers.Logger") for node in cfg["run"]["loggers"]]


def build_callbacks(cfg: dict[str, Any]) -> list[Any]:
    """``run.callbacks``, in their listed order (after lrc's own: checkpoints, interrupts, progress)."""
    from lightning.pytorch import Callback

    return [_of_type(instantiate(CALLBACKS, _as_slot(node)), Callback, CALLBACKS, _as_slot(node)["name"],
                     "a lightning.pytorch.Callback") for node in cfg["run"]["callbacks"]]


def _as_slot(node: Any) -> dict[str, Any]:
    return {"name": node} if isinstance(node, str) else node


def _of_type(obj: Any, expected: type, registry: Registry, name: str, what: str) -> Any:
    """A plugin of a kind whose objects Lightning or torch use directly must be of their type."""
    if not isinstance(obj, expected):
        dist, version = registry.package_of(name)
        raise PluginBuildError(f"{registry.kind} plugin {name!r} ({registry.origin_of(name)}, package {dist} "
                               f"{version}) built a {type(obj).__name__}, not {what}")
    return obj


def plugin_provenance(cfg: dict[str, Any]) -> dict[str, dict[str, str]]:
    """For the run's config.yaml: which class and package version each slot resolved to."""
    out = {}
    for slot, registry in {**plugin_slots(cfg), **listed_slots(cfg)}.items():
        if slot_node(cfg, slot) is None:  # model.prompt before resolve_implied: nothing resolved yet
            continue
        name = _as_slot(slot_node(cfg, slot))["name"]
        dist, version = registry.package_of(name)
        out[slot] = {"name": name, "origin": registry.origin_of(name), "package": f"{dist}=={version}"}
    return out
