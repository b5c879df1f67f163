"""Validation of a loaded experiment config: every problem at once, before anything heavy is built.

``validate`` reports each problem as ``source: key: what is wrong``, where source is the file (or
"command line") that set the key, and raises one ConfigError listing them all:

1. the schema (lrc/config/schema.py) is walked at any depth: unknown keys (with the close matches),
   types, Literal choices and ranges, all judged by lrc.constraints.check_value;
2. each plugin slot is bound to its plugin's constructor signature with the same checker (unknown,
   missing and builder-provided arguments; the annotations' types, ranges and choices), plus the
   plugin's own ``check_args`` when it has one;
3. ``trainer`` is bound to lightning.Trainer's signature, again with the same checker;
4. then what no single annotation can say: combinations of keys (packing with token dropout, a frame
   count against the compressor's clip_len, the distributed block against the machine ...).

YAML names plugins only by registered name; nothing in a config can import a module or evaluate code.
The returned config has every section key and every plugin argument filled in (the plugins' own
defaults), so the run's config.yaml says everything the run used.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable

from omegaconf.errors import OmegaConfBaseException

from lrc.config.loading import LoadedConfig
from lrc.config.schema import (COMPONENTS, CUDA_ONLY_STRATEGIES, DISTRIBUTED_KEYS, LIGHTNING_STRATEGY_NAMES,
                               OWNED_TRAINER_KEYS, SECTIONS, SEQUENCE_PARALLEL_ATTENTION, TRAINER_RANGES,
                               Sampling, TokenDropout, head_slots, hints, plugin_list_marker, plugin_marker,
                               slot_node)
from lrc.constraints import check_value
from lrc.errors import ConfigError
from lrc.registry import PluginError, Registry, suggest

Where = Callable[[str], str]


def _is_int(value: Any) -> bool:
    """A whole number (never a bool), as the schema's ``int`` means it."""
    return check_value(value, int) is None


def validate(loaded: LoadedConfig) -> dict[str, Any]:
    """Check everything that can be checked without building; raise ConfigError listing all problems.
    Returns the config as plain containers, every section key and plugin argument filled in."""
    try:
        cfg = loaded.to_container()
    except OmegaConfBaseException as exc:
        raise ConfigError([f"{loaded.path or 'config'}: cannot resolve interpolations: {exc}"]) from exc
    c = _Checks(cfg, loaded.source)
    known = [*SECTIONS, "trainer"]
    for key in cfg:
        if key not in known:
            c.report(str(key), f"unknown section.{suggest(str(key), known)}")
    for section, schema in SECTIONS.items():
        c.walk(cfg.get(section), schema, section)
    c.check_trainer(cfg.get("trainer"))
    c.walking = False  # from here on, combinations of values that passed the walk
    _fill_section_defaults(cfg)
    for check in (_check_heads, _check_token_dropout, _check_packing, _check_niah, _check_eval, _check_init,
                  _check_distributed,
                  _check_sequence_parallel, _check_data, _check_optim, _check_frames):
        check(c)
    if c.problems:
        raise ConfigError(c.problems)
    for slot, cls in c.classes.items():
        node = slot_node(cfg, slot)
        if cls is not None and isinstance(node, dict):
            registry = c.registries[slot]
            for name, value in plugin_defaults(cls, registry.provided).items():
                node.setdefault(name, value)
    return cfg


# ---------------------------------------------------------------------------------------------
# The walk: schema, plugin slots, trainer
# ---------------------------------------------------------------------------------------------
_MISSING = object()


class _Checks:
    """The problems found so far, the keys they are about, and the plugin classes the slots resolved to."""

    def __init__(self, cfg: dict[str, Any], where: Where):
        self.cfg, self.where = cfg, where
        self.problems: list[str] = []
        self.bad: set[str] = set()  # keys whose values failed the walk; the combinations skip them
        self.walking = True
        self.classes: dict[str, Any] = {}
        self.registries: dict[str, Registry] = {}

    def report(self, key: str, what: str) -> None:
        self.problems.append(f"{self.where(key)}: {key}: {what}")
        if self.walking:
            self.bad.add(key)

    def clean(self, key: str) -> bool:
        """No problem was reported about ``key``, a key above it or one below it."""
        return not any(b == key or key.startswith(b + ".") or b.startswith(key + ".") for b in self.bad)

    def get(self, key: str) -> Any:
        """The value at ``key`` when it passed the schema (else _MISSING)."""
        if not self.clean(key):
            return _MISSING
        node: Any = self.cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def walk(self, value: Any, annotation: Any, key: str) -> None:
        listed = plugin_list_marker(annotation)
        if listed is not None:
            self.walk_plugin_list(value, listed.registry, key)
            return
        marker = plugin_marker(annotation)
        if marker is not None:
            if value is None and check_value(None, annotation) is None:
                return
            self.registries[key] = marker.registry
            self.classes[key] = self.check_plugin(marker.registry, key, value)
            return
        schema = _dataclass_of(annotation)
        if schema is not None and not (value is None and check_value(None, annotation) is None):
            fields = hints(schema)
            if not isinstance(value, dict):
                self.report(key, f"must be a mapping with the keys {', '.join(fields)}, got {value!r}")
                return
            for k, v in value.items():
                full = f"{key}.{k}"
                if k not in fields:
                    self.report(full, MOVED_KEYS.get(full) or f"unknown key.{suggest(str(k), list(fields))}")
                else:
                    self.walk(v, fields[k], full)
            return
        if typing.get_origin(annotation) is dict and isinstance(value, dict):
            key_type, value_type = typing.get_args(annotation)
            for k, v in value.items():
                full = f"{key}.{k}"
                problem = check_value(k, key_type)
                if problem is not None:
                    self.report(full, problem)
                else:
                    self.walk(v, value_type, full)
            return
        problem = check_value(value, annotation)
        if problem is not None:
            hint = _HINTS.get(key, lambda v: None)(value)
            self.report(key, hint or problem)

    def walk_plugin_list(self, value: Any, registry: Registry, key: str) -> None:
        """A list of plugins (``run.loggers``): each item a name, made a mapping here so that the resolved config
        holds its arguments, or a mapping; each is a slot ``key.i``. A logger listed twice would write over itself."""
        if not isinstance(value, list):
            self.report(key, f"must be a list of {registry.kind} plugins, each a name or a mapping {{name: ..., "
                             f"<argument>: ...}}; known: {', '.join(registry.names())}; got {value!r}")
            return
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            if isinstance(item, str):
                item = value[i] = {"name": item}
            slot = f"{key}.{i}"
            self.registries[slot] = registry
            self.classes[slot] = self.check_plugin(registry, slot, item)
            name = item.get("name") if isinstance(item, dict) else None
            if registry.kind == "loggers" and isinstance(name, str) and name in seen:
                self.report(slot, f"logger {name!r} is listed twice (also item {seen[name]}); list each logger once")
            if isinstance(name, str):
                seen.setdefault(name, i)

    def check_plugin(self, registry: Registry, slot: str, node: Any) -> Any:
        """Report the problems of one plugin slot; the plugin class when its name resolves."""
        if not isinstance(node, dict) or "name" not in node:
            self.report(slot, f"must be a mapping with a `name` (one of {', '.join(registry.names())})")
            return None
        name = node["name"]
        if not isinstance(name, str):
            self.report(f"{slot}.name", f"must be a registered name (a string), got {name!r}. "
                                        f"Known: {', '.join(registry.names())}.")
            return None
        try:
            cls = registry.get(name)
        except PluginError as exc:
            self.report(f"{slot}.name", str(exc))
            return None
        params, _ = signature_of(cls)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        settable = [n for n, p in params.items()
                    if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in registry.provided]
        args = {k: v for k, v in node.items() if k != "name"}
        before = len(self.problems)
        for key in args:
            if key in registry.provided:
                self.report(f"{slot}.{key}", "set by lrc from the other components; remove it from the config")
            elif key not in params and not takes_any:
                self.report(f"{slot}.{key}", f"{registry.kind} plugin {name!r} has no argument {key!r}."
                                             f"{suggest(str(key), settable)}")
        for key, what in check_args(cls, {k: v for k, v in args.items() if k not in registry.provided}):
            self.report(f"{slot}.{key}", what)
        for n in settable:
            p = params[n]
            if p.default is p.empty and n not in args:
                self.report(f"{slot}.{n}", f"required by {registry.kind} plugin {name!r} but not set")
        # a plugin may check its own argument values cheaply (no model built): check_args(args) -> [(key, what)]
        own = getattr(cls, "check_args", None)
        if len(self.problems) == before and callable(own):
            for key, what in own(args):
                self.report(f"{slot}.{key}", what)
        return cls

    def check_trainer(self, node: Any) -> None:
        """``trainer``: lightning.Trainer's arguments, checked against its own annotations (plus TRAINER_RANGES)."""
        if not isinstance(node, dict):
            self.report("trainer", "must be a mapping of lightning.Trainer arguments")
            return
        import lightning as L

        params, annotations = signature_of(L.Trainer)
        for key, value in node.items():
            full = f"trainer.{key}"
            if key in DISTRIBUTED_KEYS:
                self.report(full, f"set distributed.{DISTRIBUTED_KEYS[key]} instead (the shared distributed block, "
                                  "docs/distributed.md)")
            elif key in OWNED_TRAINER_KEYS:
                self.report(full, OWNED_KEY_HINTS.get(key, "set by lrc (run dir, checkpoints); remove it"))
            elif key not in params:
                self.report(full, f"not an argument of lightning.Trainer.{suggest(str(key), list(params))}")
            else:
                annotation = annotations.get(key, params[key].annotation)
                if key in TRAINER_RANGES:
                    annotation = Annotated[annotation, TRAINER_RANGES[key]]
                problem = check_value(value, annotation)
                if problem is not None:
                    self.report(full, problem)


# where the trainer arguments lrc sets itself are configured instead
OWNED_KEY_HINTS = {
    "logger": "name loggers in run.loggers instead, e.g. run.loggers=[csv,mlflow] (docs/logging.md); [] logs nothing",
    "callbacks": "name callbacks in run.callbacks instead, e.g. run.callbacks=[lr_monitor,early_stopping] "
                 "(docs/logging.md)",
}
# keys that moved, and where to
MOVED_KEYS = {
    "optim.betas": "moved to optim.optimizer.betas, an argument of the adamw optimizer (docs/config.md, optim)",
}

# a clearer message than "not one of ..." for some values
_HINTS: dict[str, Callable[[Any], str | None]] = {
    "distributed.strategy": lambda v: (f"{v!r} is a Lightning strategy name; {LIGHTNING_STRATEGY_NAMES[v]}"
                                       if isinstance(v, str) and v in LIGHTNING_STRATEGY_NAMES else None),
}


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass of ``Schema`` or ``Schema | None``, else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


def signature_of(cls: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """A plugin's (or lightning.Trainer's) constructor parameters, and their annotations with Annotated markers."""
    sig = inspect.signature(cls)
    try:
        annotations = typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations only weaken the type check
        annotations = {}
    return {n: p for n, p in sig.parameters.items() if n != "self"}, annotations


def check_args(cls: Any, args: dict[str, Any]) -> list[tuple[str, str]]:
    """``(argument, what is wrong)`` for the values of ``args`` that do not fit ``cls``'s constructor annotations
    (types, Literal choices, ranges). Used by validation and by the builder before it constructs a plugin."""
    params, annotations = signature_of(cls)
    problems = []
    for key, value in args.items():
        if key in params:
            problem = check_value(value, annotations.get(key, params[key].annotation))
            if problem is not None:
                problems.append((key, problem))
    return problems


def plugin_defaults(cls: Any, provided: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settable constructor arguments of a plugin that have defaults, as plain YAML-ready values."""
    params, _ = signature_of(cls)
    return {n: _plain(p.default) for n, p in params.items()
            if n not in provided and p.default is not p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def plugin_arg(cls: Any, node: dict[str, Any], key: str, fallback: Any = None) -> Any:
    """The value a plugin will get for ``key``: the config's, else its signature default."""
    if key in node:
        return node[key]
    if cls is not None:
        p = inspect.signature(cls).parameters.get(key)
        if p is not None and p.default is not p.empty:
            return p.default
    return fallback


def _fill_section_defaults(cfg: dict[str, Any]) -> None:
    """Keys a config leaves out (a saved run config from before a key existed) get the schema's defaults."""
    for section, schema in SECTIONS.items():
        if isinstance(cfg.get(section), dict):
            _fill(cfg[section], schema)


def _fill(node: dict[str, Any], schema: type) -> None:
    defaults = dataclasses.asdict(schema())
    for name, annotation in hints(schema).items():
        if name not in node:
            node[name] = defaults[name]
        elif isinstance(node[name], dict) and _dataclass_of(annotation) is not None:
            _fill(node[name], _dataclass_of(annotation))  # type: ignore[arg-type]
        elif isinstance(node[name], list) and _item_dataclass_of(annotation) is not None:
            for item in node[name]:  # a list of blocks (data.train as sources): each block's defaults
                if isinstance(item, dict):
                    _fill(item, _item_dataclass_of(annotation))  # type: ignore[arg-type]


def _item_dataclass_of(annotation: Any) -> type | None:
    """The dataclass of ``list[Schema]``, also inside a union (``str | list[Schema]``), else None."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    for member in members:
        if typing.get_origin(member) is list and typing.get_args(member):
            found = _dataclass_of(typing.get_args(member)[0])
            if found is not None:
                return found
    return None


def token_dropout_schedule(cfg: dict[str, Any]) -> TokenDropout | None:
    """The TokenDropout of a validated config, or None when it is off."""
    node = cfg["model"].get("token_dropout") or {}
    if not node.get("enabled"):
        return None
    return TokenDropout(**node)


# ---------------------------------------------------------------------------------------------
# Combinations: what the annotations of single keys cannot say
# ---------------------------------------------------------------------------------------------
def _check_heads(c: _Checks) -> None:
    """TPO: one head per task, loss weights naming configured heads, a usable DPO reference."""
    tasks: dict[str, str] = {}
    for slot in head_slots(c.cfg):
        cls = c.classes.get(slot)
        if cls is None:
            continue
        missing = [a for a in ("task", "task_token", "begin_token") if not isinstance(getattr(cls, a, None), str)]
        if missing:
            c.report(slot, f"head plugin {slot_node(c.cfg, slot)['name']!r} does not declare {', '.join(missing)} "
                           "(see docs/plugins.md, heads)")
        elif cls.task in tasks:
            c.report(slot, f"a second head for task {cls.task!r} (also {tasks[cls.task]}); keep one head per task")
        else:
            tasks[cls.task] = slot
    # a weight may name a removed head (model.heads.mask=null), so one override removes a head
    declared = c.get("model.heads")
    labels = [str(label) for label in declared] if isinstance(declared, dict) else []
    weights = c.get("loss.head_weights")
    for label in weights if isinstance(weights, dict) else []:
        if str(label) not in labels:
            c.report(f"loss.head_weights.{label}",
                     f"no head model.heads.{label} is configured.{suggest(str(label), labels)}")
    llm, dpo = c.get("model.llm"), c.get("loss.dpo_weight")
    if c.get("loss.dpo_reference") == "lora_disabled" and dpo is not _MISSING and dpo > 0 \
            and isinstance(llm, dict) and not llm.get("lora"):
        c.report("loss.dpo_reference", "lora_disabled needs LoRA on the LLM (set model.llm.lora, e.g. {r: 8}) or use "
                                       "frozen_copy")


def _check_token_dropout(c: _Checks) -> None:
    """The schedule pairs up, and every drop layer exists in the LLM (when its config says how many it has)."""
    if c.get("model.token_dropout.enabled") is not True:
        return
    node = c.get("model.token_dropout")
    if isinstance(node, dict):
        for what in TokenDropout(**node).problems():
            c.report("model.token_dropout", what)
    layers, llm = c.get("model.token_dropout.layers"), c.get("model.llm")
    config = llm.get("config") if isinstance(llm, dict) else None
    n_layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    beyond = [layer for layer in layers if _is_int(n_layers) and layer >= n_layers] if isinstance(layers, list) else []
    if beyond:
        c.report("model.token_dropout.layers", f"{beyond} is beyond the LLM's {n_layers} layers "
                                               f"(model.llm.config.num_hidden_layers); use layers below {n_layers}")


def _check_packing(c: _Checks) -> None:
    """``data.packing``: a budget that holds the longest sample, and nothing it cannot be combined with."""
    key = "data.packing"
    node = c.get(key)
    if not isinstance(node, dict) or not node.get("enabled"):
        return
    max_length = c.get("data.max_length")
    if _is_int(max_length) and node["max_tokens"] < max_length:
        # a sample between max_tokens and max_length could neither be packed nor would it be skipped
        c.report(f"{key}.max_tokens", f"{node['max_tokens']} is below data.max_length={max_length}; packing never "
                                      "splits a sample, so the budget must hold the longest sample allowed: raise "
                                      "max_tokens or lower data.max_length")
    dropout = c.get("model.token_dropout")
    if isinstance(dropout, dict) and dropout.get("enabled"):
        c.report(key, "cannot be combined with model.token_dropout: dropping visual tokens inside the LLM is planned "
                      "per row, not per packed sample; turn one of them off")
    if _sequence_parallel(c) > 1:
        c.report(key, "cannot be combined with sequence parallelism (model.llm.sequence_parallel > 1): a "
                      "sequence-parallel forward splits one padded sequence over ranks and does not carry packed "
                      "samples' position ids; turn one of them off")
    dpo = c.get("loss.dpo_weight")
    if dpo is not _MISSING and dpo > 0:
        c.report(key, "cannot be combined with DPO (loss.dpo_weight > 0): the chosen and rejected answers are scored "
                      "as padded pairs; turn packing off for DPO stages")


def _sequence_parallel(c: _Checks) -> int:
    llm = c.get("model.llm")
    size = llm.get("sequence_parallel", 1) if isinstance(llm, dict) else 1
    return size if _is_int(size) else 1


def check_niah(cfg: dict[str, Any], running: bool = False) -> list[tuple[str, str]]:
    """Problems of a (type-checked) ``niah`` block as ``(key, what)``. The grid's fit with the model's compressor
    (frame counts and needle clips in whole clips) is checked only when NIAH will run: ``running`` (`lrc niah`)
    or ``niah.after_fit``; a config that never runs NIAH is not held to it."""
    n = cfg["niah"]
    frames, depths, hops, needle = n["frame_counts"], n["depths"], n["hops"], n["needle_frames"]
    problems: list[tuple[str, str]] = []
    if not hops or len(set(hops)) != len(hops):
        problems.append(("niah.hops", f"must list hop counts, each once, from 1 (single-hop) and 2 (multi-hop: two "
                                      f"needles, asked for their order), e.g. [1, 2]; got {hops!r}"))
    if not depths:
        problems.append(("niah.depths", "must be a non-empty list of needle depths in [0, 1] (0: the needle opens "
                                        "the video, 1: it ends it), e.g. [0, 0.25, 0.5, 0.75, 1]"))
    if not frames or len(set(frames)) != len(frames):
        problems.append(("niah.frame_counts", f"must be a non-empty list of distinct frame counts, got {frames!r}"))
    else:
        most = max(hops) if hops else 2
        least = (most + 1) * needle
        bad = [f for f in frames if f % needle or f < least]
        if bad:
            problems.append(("niah.frame_counts", f"{bad}: a haystack is a whole number of needle clips "
                                                  f"(niah.needle_frames={needle}) and holds at least {least} "
                                                  f"frames ({most} needle(s) and one clip of haystack)"))
    if n["size"] % 2:
        problems.append(("niah.size", f"must be an even number of pixels (yuv420p video), got {n['size']!r}"))
    if (running or n["after_fit"]) and not problems:
        clip = _clip_len(cfg)
        if clip and clip > 1:
            bad = [f for f in frames if f % clip]
            if bad:
                problems.append(("niah.frame_counts", f"{bad} not a multiple of model.compressor.clip_len={clip}: "
                                                      "HiCo merges whole clips; use multiples of it"))
            if needle % clip:
                problems.append(("niah.needle_frames", f"{needle} is not a multiple of model.compressor.clip_len="
                                                       f"{clip}: the needle is one clip (paper Fig. 3), set it to "
                                                       f"{clip}"))
    return problems


def _clip_len(cfg: dict[str, Any]) -> int | None:
    from lrc.registry import COMPRESSORS

    node = (cfg.get("model") or {}).get("compressor") or {}
    try:
        value = plugin_arg(COMPRESSORS.get(node.get("name")), node, "clip_len", 1)
    except PluginError:
        return None
    return value if _is_int(value) else None


def _check_niah(c: _Checks) -> None:
    if c.get("niah") is _MISSING:
        return
    for key, what in check_niah(c.cfg):
        c.report(key, what)


def _check_eval(c: _Checks) -> None:
    """``eval.benches`` (docs/evaluation.md): each names its benchmark and folder, and with ``after_fit`` the folder
    must exist before training starts (unless the synthetic MVBench-format set is to be written there)."""
    benches = c.get("eval.benches")
    if not isinstance(benches, list):
        return
    after_fit = c.get("eval.after_fit") is True
    if after_fit and not benches:
        c.report("eval.benches", "eval.after_fit needs at least one benchmark: [{name: mvbench, data: DIR}, ...]")
    for i, bench in enumerate(benches):
        if not isinstance(bench, dict):
            continue
        name, data = bench.get("name"), bench.get("data")
        for field in ("name", "data"):
            if bench.get(field) is None:
                c.report("eval.benches", f"item {i}: {field}: required, the benchmark's name and the folder holding it "
                                         "(docs/evaluation.md)")
        if bench.get("synth_videos") is not None and name not in (None, "mvbench"):
            c.report("eval.benches", f"item {i}: synth_videos: only the mvbench format can be synthesised, not {name!r}")
        if bench.get("subtitles") and name not in (None, "videomme"):
            c.report("eval.benches", f"item {i}: subtitles: only videomme has a with-subtitles setting, not {name!r}")
        if after_fit and isinstance(data, str) and not Path(data).exists() and bench.get("synth_videos") is None:
            c.report("eval.benches", f"item {i}: data: {data} does not exist (paths are relative to the working "
                                     "directory); for mvbench, set synth_videos: N to write the synthetic set there")


def _check_init(c: _Checks) -> None:
    """``model.init``: the checkpoint exists, and a component list names at least one component."""
    path = c.get("model.init.path")
    if isinstance(path, str) and not Path(path).exists():
        c.report("model.init.path", f"{path} does not exist (paths are relative to the working directory)")
    if c.get("model.init.components") == []:
        c.report("model.init.components", "a non-empty list of components (encoder, projector, llm ...) or null for "
                                          "every component the checkpoint has")


def _check_distributed(c: _Checks) -> None:
    """The distributed block against itself and the rest of the config (nothing is touched: no device, no process
    group); how each choice becomes Lightning's arguments is lrc/parallel/distributed.py."""
    get = lambda key: c.get(f"distributed.{key}")  # noqa: E731
    report = lambda key, what: c.report(f"distributed.{key}", what)  # noqa: E731
    strategy, accelerator, precision = get("strategy"), get("accelerator"), get("precision")
    if accelerator == "cpu" and precision not in ("auto", "32-true", _MISSING):
        report("precision", f"{precision} needs a GPU but distributed.accelerator is cpu; use auto (32-true on CPU, "
                            "bf16-mixed on CUDA) or 32-true")
    devices = get("devices")
    if isinstance(devices, list):
        if not devices or len(set(devices)) != len(devices):
            report("devices", f"a list names distinct GPU ids (0, 1, ...), got {devices}")
        elif accelerator == "cpu":
            report("devices", "a list of GPU ids needs a GPU accelerator; on CPU give a process count")
    if get("backend") == "nccl" and accelerator == "cpu":
        report("backend", "nccl needs CUDA devices; on CPU use gloo (or null: nccl on CUDA, gloo on CPU)")
    if strategy in CUDA_ONLY_STRATEGIES and accelerator == "cpu":
        report("strategy", CUDA_ONLY_STRATEGIES[strategy])
    if strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            report("strategy", "deepspeed is not installed. Install it on the GPU machines that train (pip install "
                               "deepspeed; it builds its CUDA ops on first use), or use strategy: fsdp, which needs "
                               "nothing beyond torch")
        if get("zero_stage") == 1 and get("offload") is True:
            report("offload", "ZeRO-Offload needs zero_stage 2 (optimizer state to CPU) or 3 (and parameters); stage 1 "
                              "cannot offload")
    llm = c.get("model.llm")
    if get("activation_checkpointing") is True and isinstance(llm, dict) and llm.get("gradient_checkpointing"):
        report("activation_checkpointing", "model.llm.gradient_checkpointing is on as well; keep one "
                                           "(distributed.activation_checkpointing covers ViT and LLM blocks)")


def _check_sequence_parallel(c: _Checks) -> None:
    """``model.llm.sequence_parallel`` above 1: what the sharded forward supports (lrc/parallel/sequence_parallel.py;
    packing is refused with data.packing)."""
    size = _sequence_parallel(c)
    if size <= 1:
        return
    key = "model.llm.sequence_parallel"
    dropout = c.get("model.token_dropout")
    if isinstance(dropout, dict) and dropout.get("enabled"):
        c.report("model.token_dropout.enabled", f"token dropout does not work with {key}={size} (dropping tokens "
                                                "between layers would unbalance the ranks' chunks); turn one of them "
                                                "off")
    llm = c.get("model.llm")
    attention = llm.get("attn_implementation", "sdpa")
    if attention not in SEQUENCE_PARALLEL_ATTENTION:
        c.report("model.llm.attn_implementation",
                 f"{key}={size} needs one of {', '.join(SEQUENCE_PARALLEL_ATTENTION)}, got {attention!r}")
    devices, nodes = c.get("distributed.devices"), c.get("distributed.num_nodes")
    count = len(devices) if isinstance(devices, list) else devices
    if _is_int(count) and count > 0 and _is_int(nodes) and (count * nodes) % size:
        c.report(key, f"{size} must divide the number of processes, distributed.devices × num_nodes = "
                      f"{count * nodes}; each group of {size} ranks shares one sequence")


def _check_sources(c: _Checks) -> None:
    """``data.train`` / ``data.val`` as a list of sources: at least one, each with its annotation file and a
    sampling that parses (whether the files exist is checked when a run starts: lrc/data/mixture.py)."""
    for split in ("train", "val"):
        key = f"data.{split}"
        spec = c.get(key)
        if not isinstance(spec, list):
            continue
        if not spec:
            c.report(key, "an empty list has no source: give a file path, or a list of {annotations: FILE, ...}")
        for i, node in enumerate(spec):
            if not isinstance(node, dict):
                continue
            name = f"source [{i}] ({node.get('annotations')})"
            if not node.get("annotations"):
                c.report(key, f"source [{i}]: annotations: required, the annotation file of this source (relative to "
                              "data.root)")
            try:
                Sampling.parse(node.get("sampling", "all"))
            except ValueError as exc:
                c.report(key, f"{name}: sampling: {exc}")


def _check_data(c: _Checks) -> None:
    _check_sources(c)
    if c.get("data.tasks") == []:
        c.report("data.tasks", "an empty list keeps no record; use null for all tasks")
    if c.get("data.synth_tasks") == []:
        c.report("data.synth_tasks", "an empty list synthesises nothing; name at least one task, e.g. [mcq]")


def _check_optim(c: _Checks) -> None:
    """Nothing to train: every component frozen, no heads to learn and no LoRA adapters on the LLM."""
    freeze, llm = c.get("optim.freeze"), c.get("model.llm")
    if not isinstance(freeze, list) or not isinstance(llm, dict):
        return
    if all(name in freeze for name in COMPONENTS if name != "heads") and not llm.get("lora") \
            and ("heads" in freeze or not head_slots(c.cfg)):
        c.report("optim.freeze", f"freezes every component ({', '.join(map(str, freeze))}), so nothing would train; "
                                 "unfreeze one, or add LoRA to the LLM (model.llm.lora)")


def _check_frames(c: _Checks) -> None:
    """HiCo merges clips of clip_len frames: a fixed frame count must be a multiple of it."""
    sampler, compressor = c.classes.get("data.sampler"), c.classes.get("model.compressor")
    if sampler is None or compressor is None or not c.clean("data.sampler") or not c.clean("model.compressor"):
        return
    frames = plugin_arg(sampler, c.cfg["data"]["sampler"], "num_frames")
    clip_len = plugin_arg(compressor, c.cfg["model"]["compressor"], "clip_len")
    if _is_int(frames) and _is_int(clip_len) and clip_len > 0 and frames % clip_len:
        c.report("data.sampler.num_frames", f"{frames} frames is not a multiple of model.compressor.clip_len="
                                            f"{clip_len}; pick a multiple of {clip_len}")
