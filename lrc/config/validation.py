"""Experiment configs: OmegaConf YAML with base files and command-line overrides, and their validation.

Loading (``load_config``):
  1. the built-in defaults (the dataclasses below);
  2. each file named in ``base: [...]`` (paths relative to the file naming them, recursively), in order;
  3. the experiment file itself;
  4. ``key=value`` overrides from the command line.
A plugin slot (``model.compressor`` ...) is a mapping with a ``name``. When a later layer changes a
slot's ``name``, arguments from earlier layers that the new plugin does not accept are dropped, so
``model.compressor.name=pooling`` switches plugin without tripping over ToMe-only arguments while the
shared vocabulary (``clip_len``, ``tokens_per_frame``) carries over.

Validation (``validate``) reports every problem at once as ``source: key: what is wrong``, where
source is the file (or "command line") that set the key, before anything heavy is built. YAML names
plugins only by registered name; nothing in a config can import a module or evaluate code.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lrc.errors import ConfigError
from lrc.registry import COMPRESSORS, ENCODERS, HEADS, LLMS, PROJECTORS, SAMPLERS, PluginError, Registry, suggest


# ---------------------------------------------------------------------------------------------
# Schema: every section, key, type and default. docs/config.md documents these.
# ---------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    name: str = "experiment"  # run dirs go to {root}/{name}/{timestamp}
    root: str = "runs"
    seed: int = 0
    on_nan: str = "stop"  # a non-finite loss: stop (with the step and sample ids) | skip the batch


@dataclass
class DataConfig:
    root: str = "data/synth"  # corpus folder; train/val are relative to it
    train: str = "train.jsonl"
    val: str = "val.jsonl"
    synth_videos: Union[int, None] = None  # synthesise a corpus of this many videos if root is missing
    synth_answer_style: str = "letter"  # letter | text (see docs/data.md)
    synth_multi_turn_train: bool = False  # train records: one multi-turn conversation per video
    synth_tasks: list = field(default_factory=lambda: ["mcq"])  # + temporal, region, mask, preference (TPO)
    sampler: dict = field(default_factory=lambda: {"name": "uniform"})
    tokenizer: Union[str, None] = None  # None: the LLM's pretrained folder, else {root}/tokenizer
    batch_size: int = 4
    eval_batch_size: Union[int, None] = None
    num_workers: int = 0
    max_length: int = 4096
    cache_frames: bool = False  # keep decoded frames in RAM (deterministic samplers only)
    tasks: Union[list, None] = None  # use only records of these tasks (None: all)
    read_timeout_s: float = 30.0  # give up on a video open/read after this long; the sample is skipped
    max_bad_fraction: float = 0.05  # stop the run when more than this fraction of a split is unreadable
    # training samples packed into rows of at most max_tokens tokens (lrc/data/packing.py, §3.5)
    packing: dict = field(default_factory=lambda: {"enabled": False, "max_tokens": 8192, "lookahead": 512})


@dataclass
class ModelConfig:
    encoder: dict = field(default_factory=lambda: {"name": "timm_vit"})
    compressor: dict = field(default_factory=lambda: {"name": "tome"})
    projector: dict = field(default_factory=lambda: {"name": "mlp"})
    llm: dict = field(default_factory=lambda: {"name": "hf_causal_lm"})
    # HiCo level 2 (lrc/model/token_dropout.py): {enabled, layers, ratios, mode, uniform_stages, bernoulli}
    token_dropout: dict = field(default_factory=lambda: {"enabled": False})
    # TPO heads (lrc/model/tpo.py): label -> head plugin slot, e.g. {temporal: {name: cgdetr}}; a label set
    # to null removes that head (model.heads.mask=null)
    heads: dict = field(default_factory=dict)
    # weights loaded after the model is built (lrc/weights/pretrained.py, docs/checkpoints.md): an lrc run or
    # export (stage 2 from stage 1), a transformers InternVL folder or an original InternVL2.5 checkpoint
    init: dict = field(default_factory=lambda: {"path": None, "layout": "auto", "components": None, "strict": True})


@dataclass
class LossConfig:
    """L_total = L_base + task_weight·L_task + spec_weight·Σ_k head_weights[k]·L_spec,k  (paper eq. 3),
    plus dpo_weight·L_DPO on preference records."""

    task_weight: float = 0.1  # λ1: task recognition from the query (only with heads)
    spec_weight: float = 1.0  # λ2: the heads' own losses
    head_weights: dict = field(default_factory=dict)  # w_k per head label; 1.0 where not given
    dpo_weight: float = 0.0  # 0 turns DPO off
    dpo_beta: float = 0.1
    dpo_reference: str = "frozen_copy"  # frozen_copy | lora_disabled (needs model.llm.lora)


@dataclass
class OptimConfig:
    # InternVideo2.5 finetuning: ViT 2e-6, connector 1e-5, LLM 1e-5 (REFERENCE.md "Training system")
    # heads (TPO heads, task embeddings, task classifier) start from scratch: a larger rate
    lr: dict = field(default_factory=lambda: {"encoder": 2e-6, "compressor": 1e-5, "projector": 1e-5, "llm": 1e-5,
                                              "heads": 1e-4})
    freeze: list = field(default_factory=list)  # component names: encoder, compressor, projector, llm, heads
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0


@dataclass
class DistributedConfig:
    """Processes, devices and how they share the model: the one shared block (experiments/base.yaml),
    turned into Lightning's accelerator, strategy and precision by lrc/parallel/distributed.py (docs/distributed.md).
    The global batch is data.batch_size × devices × num_nodes (× trainer.accumulate_grad_batches)."""

    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed
    accelerator: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | gpu
    devices: Union[int, str, list] = 1  # processes per node: a count, -1 or "auto" (every GPU), or GPU ids
    num_nodes: int = 1
    precision: str = "auto"  # auto: bf16-mixed on CUDA (16-mixed without bf16), 32-true on CPU
    activation_checkpointing: bool = False  # recompute ViT and LLM decoder blocks in backward (§3.5 memory)
    fsdp_sharding: str = "full"  # fsdp: full | shard_grad_op | hybrid | no_shard
    zero_stage: int = 2  # deepspeed: ZeRO stage 1 | 2 | 3
    offload: bool = False  # fsdp: parameters to CPU; deepspeed: optimizer state (stage >= 2), parameters (3)
    find_unused_parameters: bool = False  # ddp: some trainable parameters get no gradient in a step
    backend: Union[str, None] = None  # process group backend; None: nccl on CUDA, gloo on CPU
    timeout_s: float = 1800.0  # how long a collective waits for the other ranks


@dataclass
class NiahConfig:
    """Needle-in-a-haystack evaluation (paper Fig. 3; lrc/commands/niah.py, docs/niah.md): haystacks of each frame
    count (1 frame per second of video) × needle depth × hop count, scored teacher-forced by exact match."""

    frame_counts: list = field(default_factory=lambda: [16, 32, 64, 128, 256])  # tried in increasing order
    depths: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # 0: start, 1: end of the video
    needle_frames: int = 4  # the needle image repeated as one clip (the compressor's clip_len)
    hops: list = field(default_factory=lambda: [1, 2])  # 1: single-hop, 2: two needles, asked for their order
    questions_per_cell: int = 4
    memory_cap_gib: Union[float, None] = None  # a forward's peak above this counts as out of memory
    root: str = "data/niah"  # haystack videos and records, cached (written only when missing)
    seed: int = 0
    size: int = 64  # haystack frame side in pixels
    after_fit: bool = False  # `lrc fit` runs the evaluation after training and adds niah/* to metrics.json


SECTIONS: dict[str, type] = {"run": RunConfig, "data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
                             "loss": LossConfig, "distributed": DistributedConfig, "niah": NiahConfig}
# ``trainer`` is bound to lightning.Trainer's own signature instead of a dataclass; devices, strategy and
# precision are not trainer keys but the ``distributed`` block's.
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 1, "log_every_n_steps": 10, "num_sanity_val_steps": 0}
PLUGIN_SLOTS: dict[str, Registry] = {
    "data.sampler": SAMPLERS,
    "model.encoder": ENCODERS,
    "model.compressor": COMPRESSORS,
    "model.projector": PROJECTORS,
    "model.llm": LLMS,
}
COMPONENTS = ("encoder", "compressor", "projector", "llm", "heads")
DPO_REFERENCES = ("frozen_copy", "lora_disabled")
ON_NAN = ("stop", "skip")


def head_slots(cfg: dict[str, Any]) -> dict[str, Registry]:
    """``model.heads.<label>`` slots of a config (labels whose value is null are removed heads)."""
    heads = ((cfg.get("model") or {}).get("heads")) or {}
    if not isinstance(heads, dict):
        return {}
    return {f"model.heads.{label}": HEADS for label, node in heads.items() if node is not None}


def plugin_slots(cfg: dict[str, Any]) -> dict[str, Registry]:
    """Every plugin slot of a config: the fixed ones and its heads."""
    return {**PLUGIN_SLOTS, **head_slots(cfg)}


def slot_node(cfg: dict[str, Any], slot: str) -> Any:
    node: Any = cfg
    for part in slot.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def defaults() -> dict[str, Any]:
    out = {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}
    out["trainer"] = dict(TRAINER_DEFAULTS)
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedConfig:
    cfg: DictConfig
    path: Path | None
    sources: dict[str, str]  # dotted key -> file (or "command line") that last set it

    def source(self, key: str) -> str:
        parts = str(key).split(".")
        for n in range(len(parts), 0, -1):
            found = self.sources.get(".".join(parts[:n]))
            if found:
                return found
        return "defaults"

    def to_container(self) -> dict[str, Any]:
        return OmegaConf.to_container(self.cfg, resolve=True)  # type: ignore[return-value]


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> list[tuple[dict[str, Any], str]]:
    """The file's bases (recursively) then the file, as plain dicts with their source names."""
    if path in chain:
        raise ConfigError([f"{path}: base: circular base chain: {' -> '.join(map(str, chain + (path,)))}"])
    if not path.is_file():
        where = f"{chain[-1]}: base" if chain else "command line"
        raise ConfigError([f"{where}: config file {path} does not exist"])
    try:
        node = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as exc:  # noqa: BLE001 - YAML syntax errors of all kinds
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(node, DictConfig):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got a list"])
    data = OmegaConf.to_container(node, resolve=False)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    layers: list[tuple[dict[str, Any], str]] = []
    for base in bases:
        layers += _read_yaml((path.parent / base).resolve(), chain + (path,))
    layers.append((data, str(path)))
    return layers


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out[key] = v
            out.update(_flatten(v, key))
    return out


def leaf_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}``: how overrides are compared and written as ``key=value``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(leaf_keys(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def _switch_plugins(merged: dict[str, Any], layer: dict[str, Any]) -> None:
    """Drop a slot's earlier arguments that a newly named plugin does not accept (see module doc)."""
    for slot, registry in plugin_slots(layer).items():
        new, old = slot_node(layer, slot), slot_node(merged, slot)
        if not isinstance(new, dict) or not isinstance(old, dict) or "name" not in new:
            continue
        if new["name"] == old.get("name"):
            continue
        accepted = _accepted_args(registry, new["name"])
        parent = slot_node(merged, slot.rsplit(".", 1)[0])
        parent[slot.rsplit(".", 1)[1]] = {k: v for k, v in old.items()
                                          if k == "name" or (accepted is not None and k in accepted)}


def _accepted_args(registry: Registry, name: Any) -> set[str] | None:
    try:
        params = inspect.signature(registry.get(name)).parameters
    except (PluginError, TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - {"self"}


def _deep_merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    for k, v in layer.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError([f"command line: {o!r}: overrides look like key=value (e.g. model.compressor.name=tome)"
                           for o in bad])
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=False)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError([f"command line: cannot parse overrides: {exc}"]) from exc


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> LoadedConfig:
    layers: list[tuple[dict[str, Any], str]] = []
    if path is not None:
        path = Path(path).resolve()
        layers = _read_yaml(path, ())
    if overrides:
        layers.append((parse_overrides(overrides), "command line"))
    merged = defaults()
    sources: dict[str, str] = {}
    for data, source in layers:
        _switch_plugins(merged, data)
        _deep_merge(merged, data)
        for key in _flatten(data):
            sources[key] = source
    return LoadedConfig(OmegaConf.create(merged), Path(path) if path else None, sources)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def type_ok(value: Any, annotation: Any) -> bool:
    """A small structural check of YAML values against a constructor annotation."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    base = origin or annotation
    if base in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple, ListConfig)):
            return False
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return not args or all(type_ok(v, args[0]) for v in value)
    if base in (dict, collections.abc.Mapping):
        return isinstance(value, (dict, DictConfig))
    if isinstance(base, type):
        return isinstance(value, base)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def signature_of(cls: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    sig = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations only weaken the type check
        hints = {}
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    return params, hints


def check_plugin(registry: Registry, slot: str, node: Any, where: Any) -> tuple[list[str], Any]:
    """Problems with one plugin slot, and its class when the name resolves."""
    if not isinstance(node, dict) or "name" not in node:
        return [f"{where(slot)}: {slot}: must be a mapping with a `name` (one of {', '.join(registry.names())})"], None
    name = node["name"]
    if not isinstance(name, str):
        return [f"{where(slot + '.name')}: {slot}.name: must be a registered name (a string), got {name!r}. "
                f"Known: {', '.join(registry.names())}."], None
    try:
        cls = registry.get(name)
    except PluginError as exc:
        return [f"{where(slot + '.name')}: {slot}.name: {exc}"], None
    params, hints = signature_of(cls)
    problems = []
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    settable = [n for n in accepted if n not in registry.provided]
    for key, value in node.items():
        if key == "name":
            continue
        full = f"{slot}.{key}"
        if key in registry.provided:
            problems.append(f"{where(full)}: {full}: set by lrc from the other components; remove it from the config")
        elif key not in params and not takes_any:
            problems.append(f"{where(full)}: {full}: {registry.kind} plugin {name!r} has no argument {key!r}."
                            f"{suggest(key, settable)}")
        elif key in params and not type_ok(value, hints.get(key, params[key].annotation)):
            problems.append(f"{where(full)}: {full}: expected {_type_name(hints.get(key, params[key].annotation))}, "
                            f"got {value!r}")
    for n in settable:
        p = params[n]
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in node:
            problems.append(f"{where(slot)}: {slot}.{n}: required by {registry.kind} plugin {name!r} but not set")
    # a plugin may check its own argument values cheaply (no model built): check_args(args) -> [(key, what)]
    check_args = getattr(cls, "check_args", None)
    if not problems and callable(check_args):
        for key, what in check_args({k: v for k, v in node.items() if k != "name"}):
            full = f"{slot}.{key}"
            problems.append(f"{where(full)}: {full}: {what}")
    return problems, cls


def plugin_arg(cls: Any, node: dict[str, Any], key: str, fallback: Any = None) -> Any:
    """The value a plugin will get for ``key``: the config's, else its signature default."""
    if key in node:
        return node[key]
    if cls is not None:
        p = inspect.signature(cls).parameters.get(key)
        if p is not None and p.default is not p.empty:
            return p.default
    return fallback


def validate(loaded: LoadedConfig) -> dict[str, Any]:
    """Check everything that can be checked without building; raise ConfigError listing all problems."""
    problems: list[str] = []
    where = loaded.source
    try:
        cfg = loaded.to_container()
    except OmegaConfBaseException as exc:
        raise ConfigError([f"{loaded.path or 'config'}: cannot resolve interpolations: {exc}"]) from exc

    known = set(SECTIONS) | {"trainer"}
    for key in cfg:
        if key not in known:
            problems.append(f"{where(key)}: {key}: unknown section.{suggest(key, sorted(known))}")

    for section, schema in SECTIONS.items():
        node = cfg.get(section)
        if not isinstance(node, dict):
            problems.append(f"{where(section)}: {section}: must be a mapping")
            continue
        fields = {f.name: f for f in dataclasses.fields(schema)}
        hints = typing.get_type_hints(schema)
        for key, value in node.items():
            full = f"{section}.{key}"
            if key not in fields:
                problems.append(f"{where(full)}: {full}: unknown key.{suggest(key, sorted(fields))}")
            elif f"{section}.{key}" not in PLUGIN_SLOTS and not type_ok(value, hints[key]):
                problems.append(f"{where(full)}: {full}: expected {_type_name(hints[key])}, got {value!r}")

    classes: dict[str, Any] = {}
    for slot, registry in plugin_slots(cfg).items():
        found, cls = check_plugin(registry, slot, slot_node(cfg, slot), where)
        problems += found
        classes[slot] = cls
    problems += _check_heads(cfg, classes, where)

    problems += _check_token_dropout((cfg.get("model") or {}).get("token_dropout"), where)
    problems += _check_packing(cfg, where)
    problems += _check_niah(cfg, where)
    problems += _check_init((cfg.get("model") or {}).get("init"), where)
    problems += _check_trainer(cfg.get("trainer"), where)
    problems += _check_distributed(cfg, where)
    problems += _check_sequence_parallel(cfg, where)
    problems += _check_cross(cfg, classes, where)
    if problems:
        raise ConfigError(problems)
    return cfg


def _check_heads(cfg: dict[str, Any], classes: dict[str, Any], where: Any) -> list[str]:
    """TPO: one head per task, loss weights naming configured heads, a usable DPO reference."""
    problems = []
    tasks: dict[str, str] = {}
    for slot in head_slots(cfg):
        cls = classes.get(slot)
        task = getattr(cls, "task", None)
        if cls is None:
            continue
        missing = [a for a in ("task", "task_token", "begin_token") if not isinstance(getattr(cls, a, None), str)]
        if missing:
            problems.append(f"{where(slot)}: {slot}: head plugin {slot_node(cfg, slot)['name']!r} does not declare "
                            f"{', '.join(missing)} (see docs/plugins.md, heads)")
        elif task in tasks:
            problems.append(f"{where(slot)}: {slot}: a second head for task {task!r} (also {tasks[task]}); "
                            "keep one head per task")
        else:
            tasks[task] = slot
    loss = cfg.get("loss") or {}
    # a weight may name a removed head (model.heads.mask=null), so one override removes a head
    declared = ((cfg.get("model") or {}).get("heads")) or {}
    labels = set(declared) if isinstance(declared, dict) else set()
    weights = loss.get("head_weights") or {}
    if isinstance(weights, dict):
        for label in weights:
            if label not in labels:
                problems.append(f"{where(f'loss.head_weights.{label}')}: loss.head_weights.{label}: no head "
                                f"model.heads.{label} is configured.{suggest(str(label), sorted(labels))}")
    reference = loss.get("dpo_reference")
    if reference not in DPO_REFERENCES:
        problems.append(f"{where('loss.dpo_reference')}: loss.dpo_reference: {reference!r} is not one of "
                        f"{', '.join(DPO_REFERENCES)}")
    elif reference == "lora_disabled" and (loss.get("dpo_weight") or 0) > 0:
        if not ((cfg.get("model") or {}).get("llm") or {}).get("lora"):
            problems.append(f"{where('loss.dpo_reference')}: loss.dpo_reference: lora_disabled needs LoRA on the LLM "
                            "(set model.llm.lora, e.g. {r: 8}) or use frozen_copy")
    return problems


def _check_token_dropout(node: Any, where: Any) -> list[str]:
    from lrc.model.token_dropout import TokenDropout

    key = "model.token_dropout"
    if not isinstance(node, dict):
        return [f"{where(key)}: {key}: must be a mapping such as {{enabled: true, layers: [8, 16], ratios: [0.5, 0.25]}}"]
    fields = {f.name: f for f in dataclasses.fields(TokenDropout)}
    hints = typing.get_type_hints(TokenDropout)
    problems = []
    for k, v in node.items():
        full = f"{key}.{k}"
        if k == "enabled":
            if not isinstance(v, bool):
                problems.append(f"{where(full)}: {full}: expected bool, got {v!r}")
        elif k not in fields:
            problems.append(f"{where(full)}: {full}: unknown key.{suggest(k, sorted(fields) + ['enabled'])}")
        elif not type_ok(v, hints[k]):
            problems.append(f"{where(full)}: {full}: expected {_type_name(hints[k])}, got {v!r}")
    if problems or not node.get("enabled"):
        return problems
    schedule = TokenDropout(**{k: v for k, v in node.items() if k != "enabled"})
    return [f"{where(key)}: {key}: {p}" for p in schedule.problems()]


def _check_niah(cfg: dict[str, Any], where: Any) -> list[str]:
    from lrc.commands.niah import check_niah

    return [f"{where(key)}: {key}: {what}" for key, what in check_niah(cfg)]


def _check_packing(cfg: dict[str, Any], where: Any) -> list[str]:
    from lrc.data.packing import check_packing

    return [f"{where(key)}: {key}: {what}" for key, what in check_packing(cfg)]


def _check_init(node: Any, where: Any) -> list[str]:
    from lrc.weights.pretrained import check_init

    return [f"{where(f'model.init.{k}' if k else 'model.init')}: model.init{'.' + k if k else ''}: {what}"
            for k, what in check_init(node)]


def token_dropout_schedule(cfg: dict[str, Any]) -> Any:
    """The TokenDropout of a validated config, or None when it is off."""
    from lrc.model.token_dropout import TokenDropout

    node = cfg["model"].get("token_dropout") or {}
    if not node.get("enabled"):
        return None
    return TokenDropout(**{k: v for k, v in node.items() if k != "enabled"})


def _check_trainer(node: Any, where: Any) -> list[str]:
    if not isinstance(node, dict):
        return [f"{where('trainer')}: trainer: must be a mapping of lightning.Trainer arguments"]
    import lightning as L

    params = inspect.signature(L.Trainer.__init__).parameters
    owned = {"logger", "callbacks", "default_root_dir", "enable_checkpointing"}
    problems = []
    for key in node:
        full = f"trainer.{key}"
        if key in DISTRIBUTED_KEYS:
            problems.append(f"{where(full)}: {full}: set distributed.{DISTRIBUTED_KEYS[key]} instead (the shared "
                            "distributed block, docs/distributed.md)")
        elif key in owned:
            problems.append(f"{where(full)}: {full}: set by lrc (run dir, CSV/TensorBoard logs, checkpoints); remove it")
        elif key not in params:
            problems.append(f"{where(full)}: {full}: not an argument of lightning.Trainer."
                            f"{suggest(key, [p for p in params if p != 'self'])}")
    return problems


# Trainer arguments that the distributed block owns (lrc/parallel/distributed.py builds them), and where they went.
DISTRIBUTED_KEYS = {"accelerator": "accelerator", "devices": "devices", "num_nodes": "num_nodes",
                    "strategy": "strategy", "precision": "precision"}


def _check_distributed(cfg: dict[str, Any], where: Any) -> list[str]:
    from lrc.parallel.distributed import check_distributed

    node = cfg.get("distributed")
    if not isinstance(node, dict):
        return []  # reported with the other sections
    return [f"{where(f'distributed.{k}')}: distributed.{k}: {what}" for k, what in check_distributed(node, cfg)]


def _check_sequence_parallel(cfg: dict[str, Any], where: Any) -> list[str]:
    from lrc.parallel.sequence_parallel import check_config

    return [f"{where(key)}: {key}: {what}" for key, what in check_config(cfg)]


def _check_cross(cfg: dict[str, Any], classes: dict[str, Any], where: Any) -> list[str]:
    """Combinations that are individually valid but do not fit together."""
    problems = []
    on_nan = (cfg.get("run") or {}).get("on_nan", "stop")
    if on_nan not in ON_NAN:
        problems.append(f"{where('run.on_nan')}: run.on_nan: {on_nan!r} is not one of {', '.join(ON_NAN)}")
    optim = cfg.get("optim") or {}
    freeze = optim.get("freeze") or []
    lr = optim.get("lr") or {}
    if isinstance(freeze, list):
        for name in freeze:
            if name not in COMPONENTS:
                problems.append(f"{where('optim.freeze')}: optim.freeze: unknown component {name!r}.{suggest(str(name), list(COMPONENTS))}")
    if isinstance(lr, dict):
        for name in lr:
            if name not in COMPONENTS:
                problems.append(f"{where(f'optim.lr.{name}')}: optim.lr.{name}: unknown component.{suggest(str(name), list(COMPONENTS))}")
    data = cfg.get("data") or {}
    timeout, bad = data.get("read_timeout_s", 30.0), data.get("max_bad_fraction", 0.05)
    if type_ok(timeout, float) and not 0 < timeout < math.inf:
        problems.append(f"{where('data.read_timeout_s')}: data.read_timeout_s: must be a positive number of "
                        f"seconds, got {timeout!r}")
    if type_ok(bad, float) and not 0 <= bad <= 1:
        problems.append(f"{where('data.max_bad_fraction')}: data.max_bad_fraction: must be between 0 and 1 "
                        f"(0: stop at the first unreadable sample), got {bad!r}")
    for key in ("batch_size", "eval_batch_size", "max_length"):
        value = data.get(key)
        if type_ok(value, int) and value < 1:
            problems.append(f"{where(f'data.{key}')}: data.{key}: must be at least 1, got {value!r}")
    if type_ok(data.get("num_workers"), int) and data["num_workers"] < 0:
        problems.append(f"{where('data.num_workers')}: data.num_workers: must be 0 (load in the main process) or "
                        f"more, got {data['num_workers']!r}")
    tasks = data.get("tasks")
    if isinstance(tasks, list):
        from lrc.data.annotations import TASKS

        for task in tasks:
            if task not in TASKS:
                problems.append(f"{where('data.tasks')}: data.tasks: unknown task {task!r}.{suggest(str(task), list(TASKS))}")
        if not tasks:
            problems.append(f"{where('data.tasks')}: data.tasks: an empty list keeps no record; use null for all tasks")
    # nothing to train: every component frozen, no heads to learn and no LoRA adapters on the LLM
    model = cfg.get("model") or {}
    llm = model.get("llm") if isinstance(model.get("llm"), dict) else {}
    if isinstance(freeze, list) and all(c in freeze for c in COMPONENTS if c != "heads") and not llm.get("lora") \
            and ("heads" in freeze or not head_slots(cfg)):
        problems.append(f"{where('optim.freeze')}: optim.freeze: freezes every component ({', '.join(map(str, freeze))}), "
                        "so nothing would train; unfreeze one, or add LoRA to the LLM (model.llm.lora)")
    # token dropout acts between decoder layers: a layer index must exist in the LLM
    dropout = model.get("token_dropout") if isinstance(model.get("token_dropout"), dict) else {}
    llm_config = llm.get("config") if isinstance(llm.get("config"), dict) else {}
    n_layers = llm_config.get("num_hidden_layers")
    if dropout.get("enabled") and type_ok(n_layers, int):
        from lrc.model.token_dropout import TokenDropout

        layers = dropout.get("layers", TokenDropout().layers)
        beyond = [l for l in layers if type_ok(l, int) and l >= n_layers] if isinstance(layers, list) else []
        if beyond:
            problems.append(f"{where('model.token_dropout.layers')}: model.token_dropout.layers: {beyond} is beyond the "
                            f"LLM's {n_layers} layers (model.llm.config.num_hidden_layers); use layers below {n_layers}")
    # HiCo merges clips of clip_len frames: a fixed frame count must be a multiple of it.
    sampler = (cfg.get("data") or {}).get("sampler") or {}
    compressor = (cfg.get("model") or {}).get("compressor") or {}
    if classes.get("data.sampler") is not None and classes.get("model.compressor") is not None:
        frames = plugin_arg(classes["data.sampler"], sampler, "num_frames")
        clip_len = plugin_arg(classes["model.compressor"], compressor, "clip_len")
        if isinstance(frames, int) and isinstance(clip_len, int) and clip_len > 0 and frames % clip_len:
            problems.append(f"{where('data.sampler.num_frames')}: data.sampler.num_frames: {frames} frames is not a "
                            f"multiple of model.compressor.clip_len={clip_len}; pick a multiple of {clip_len}")
    return problems
