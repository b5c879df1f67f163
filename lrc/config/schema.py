"""The one typed schema of an experiment config: every section, key, type, range and default.

Each section is a dataclass; a sub-block (``data.packing``, ``model.token_dropout``, ``model.init``) is a
nested dataclass, a plugin slot is ``Annotated[dict, Plugin(REGISTRY)]`` (its arguments are the
plugin's constructor signature, lrc/config/validation.py binds them), and ranges and choices are the
annotations of lrc/constraints.py. The enumerations (components, tasks, strategies ...) are defined
here once; the modules that act on them import them from here. docs/config.md documents every key
(tests/test_docs.py checks it against this file).

``trainer`` is not a dataclass: it is lightning.Trainer's own signature (lrc/config/validation.py), with
lrc's defaults (TRAINER_DEFAULTS) and ranges for the common numeric arguments (TRAINER_RANGES).
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

from lrc.constraints import (Fraction, LocalPath, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                             PositiveInt, Range, Seed, Text, UnitInterval)
from lrc.registry import (CALLBACKS, COMPRESSORS, ENCODERS, HEADS, LLMS, LOGGERS, OPTIMIZERS, PROJECTORS, PROMPTS,
                          SAMPLERS, Registry)


@dataclass(frozen=True)
class Plugin:
    """Marker for ``Annotated[dict, Plugin(REGISTRY)]``: a plugin slot, ``{name: <registered name>, <arg>: ...}``."""

    registry: Registry


@dataclass(frozen=True)
class PluginList:
    """Marker for ``Annotated[list, PluginList(REGISTRY)]``: a list of plugin slots, each a registered name or a
    mapping ``{name: <registered name>, <arg>: ...}`` (``run.loggers``, ``run.callbacks``). Validation turns every
    item into a mapping with the plugin's defaults filled in."""

    registry: Registry


# ---------------------------------------------------------------------------------------------
# Enumerations, each written once
# ---------------------------------------------------------------------------------------------
# the model's parts, as optim.lr / optim.freeze / model.init.components name them (lrc/model/mllm.py)
COMPONENTS = ("encoder", "compressor", "projector", "llm", "heads")
Component = Literal[COMPONENTS]
# an annotation record's task (docs/data.md); data.tasks selects among them
TASKS = ("chat", "mcq", "temporal", "region", "mask", "preference")
# what the synthetic corpus can hold (lrc/data/synth/corpus.py); needle: lrc/data/synth/needle.py
SYNTH_TASKS = ("mcq", "temporal", "region", "mask", "preference", "needle")
ANSWER_STYLES = ("letter", "text")  # a synthesised MCQ is answered with the option letter or its text
# annotation file formats (lrc/data/formats/, docs/data.md); auto: detected from the first records
ANNOTATION_FORMATS = ("lrc", "llava", "sharegpt")
SOURCE_FORMATS = ("auto",) + ANNOTATION_FORMATS
ON_NAN = ("stop", "skip")
# standard video benchmarks `lrc eval` reads (lrc/evaluation/<name>.py, docs/evaluation.md)
BENCHMARKS = ("mvbench", "videomme", "longvideobench", "mlvu", "charades_sta")
EVAL_SAMPLERS = ("uniform", "config")  # the benchmark's frame count uniformly, or the model's own data.sampler
# the learning-rate schedules after the warmup (lrc/train/module.py lr_factor): a validated choice, not a plugin
# kind — they are one-line functions of the training progress sharing warmup_ratio and min_lr_ratio (docs/design.md)
SCHEDULES = ("cosine", "linear", "constant")
DPO_REFERENCES = ("frozen_copy", "lora_disabled")
# HiCo level 2 (lrc/model/token_dropout.py)
TOKEN_DROPOUT_MODES = ("uniform", "attention", "uniform_then_attention")
# model.init (lrc/weights/pretrained.py, docs/checkpoints.md)
LAYOUTS = ("auto", "lrc", "internvl_hf", "internvl_remote")
# the distributed block (lrc/parallel/distributed.py, docs/distributed.md)
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
FSDP_SHARDINGS = ("full", "shard_grad_op", "hybrid", "no_shard")
ZERO_STAGES = (1, 2, 3)
BACKENDS = ("nccl", "gloo")
# strategies that Lightning runs on CUDA devices only (its FSDPStrategy refuses accelerator=cpu), and why
CUDA_ONLY_STRATEGIES = {
    "fsdp": "Lightning's FSDP needs CUDA devices; on the CPU use ddp (the model is then not sharded)",
    "deepspeed": "DeepSpeed needs CUDA devices; on the CPU use ddp (the model is then not sharded)",
}
# Lightning's registered strategy names that the block spells differently, and how
LIGHTNING_STRATEGY_NAMES = {
    "ddp_spawn": "use strategy: ddp. lrc runs one process per device by re-running the command (or under "
                 "torchrun / srun); spawned workers cannot hand lrc's results back",
    "ddp_fork": "use strategy: ddp (forked workers cannot hand lrc's results back)",
    "ddp_notebook": "use strategy: ddp (forked workers cannot hand lrc's results back)",
    "ddp_find_unused_parameters_true": "use strategy: ddp with find_unused_parameters: true",
    "fsdp_cpu_offload": "use strategy: fsdp with offload: true",
    "deepspeed_stage_1": "use strategy: deepspeed with zero_stage: 1",
    "deepspeed_stage_2": "use strategy: deepspeed with zero_stage: 2",
    "deepspeed_stage_2_offload": "use strategy: deepspeed with zero_stage: 2 and offload: true",
    "deepspeed_stage_3": "use strategy: deepspeed with zero_stage: 3",
    "deepspeed_stage_3_offload": "use strategy: deepspeed with zero_stage: 3 and offload: true",
    "single_device": "use strategy: auto with devices: 1",
}
# transformers' attention kernels, as the hf_causal_lm and internvl_vit plugins take them (attn_implementation)
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# the attention kernels a sequence-parallel forward wraps (lrc/parallel/sequence_parallel.py)
SEQUENCE_PARALLEL_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3")

DropRatio = Fraction  # a share of the original visual tokens kept: (0, 1]


# ---------------------------------------------------------------------------------------------
# Sections and their blocks
# ---------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    name: str = "experiment"  # run dirs go to {root}/{name}/{timestamp}
    root: str = "runs"
    seed: Seed = 0
    on_nan: Literal[ON_NAN] = "stop"  # a non-finite loss: stop (with the step and sample ids) | skip the batch
    # periodic checkpoints (lrc/train/checkpointing.py, docs/checkpoints.md): also at every epoch end and on
    # SIGINT/SIGTERM; null turns one trigger off. Every save is atomic; the newest keep_last_checkpoints stay.
    checkpoint_every_n_steps: Optional[PositiveInt] = None  # every N optimizer steps
    checkpoint_every_minutes: Optional[PositiveFloat] = 30.0  # every M minutes of training (rank 0's clock)
    keep_last_checkpoints: PositiveInt = 2  # step-N.ckpt files kept (2: a damaged newest falls back to the one before)
    # where metrics and the resolved config go, and what runs beside training: lists of plugins, each a name or
    # {name: ..., <arg>: ...} (lrc/train/run.py, docs/logging.md)
    loggers: Annotated[list, PluginList(LOGGERS)] = field(
        default_factory=lambda: [{"name": "csv"}, {"name": "tensorboard"}])
    callbacks: Annotated[list, PluginList(CALLBACKS)] = field(default_factory=list)
    # a fit whose stderr is not a terminal prints a progress line this often (a terminal gets a bar instead)
    progress_every_s: PositiveFloat = 30.0
    # CPU threads: torch's pools and the data pipeline's decoding; None: OMP_NUM_THREADS if set, else the CPUs this
    # process may run on (os.sched_getaffinity), which `lrc ablate --jobs N` divides (lrc/cpus.py, troubleshooting.md)
    threads: Optional[PositiveInt] = None


@dataclass
class PackingConfig:
    """``data.packing``: training samples packed into rows of at most max_tokens tokens (lrc/data/packing.py, §3.5)."""

    enabled: bool = False
    max_tokens: PositiveInt = 8192  # tokens per packed row; at least data.max_length
    lookahead: PositiveInt = 512  # samples planned together (first-fit decreasing within the window)


SAMPLING_KINDS = ("all", "first", "end", "random")  # a source's sampling (DataSource.sampling, lrc/data/mixture.py)


@dataclass(frozen=True)
class Sampling:
    """A parsed ``sampling`` string: ``kind`` (all | first | end | random) and ``count`` or ``percent``."""

    kind: str
    count: Optional[int] = None
    percent: Optional[int] = None

    def size(self, available: int) -> int:
        """How many of ``available`` records it keeps (a percentage rounds up, as LLaVA-NeXT's loader does)."""
        if self.kind == "all":
            return available
        if self.percent is not None:
            return -(-self.percent * available // 100)
        return int(self.count)  # type: ignore[arg-type]

    @staticmethod
    def parse(text: Any) -> "Sampling":
        """``all``, ``first:N[%]``, ``end:N[%]``, ``random:N[%]`` or ``N`` (= ``random:N``); ValueError saying what
        is wrong."""
        import re

        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str):
            raise ValueError(f"must be a string such as all, first:10%, random:500 or 500; got {text!r}")
        spec = text.strip().lower().replace(" ", "")
        if spec == "all":
            return Sampling("all")
        m = re.fullmatch(r"(?:(first|end|random):)?(\d+)(%?)", spec)
        if not m:
            raise ValueError(f"{text!r} is not a sampling: use all, first:N, first:N%, end:N, end:N%, random:N, "
                             "random:N% or N (N records at random)")
        kind, number, percent = m.group(1) or "random", int(m.group(2)), bool(m.group(3))
        if number == 0:
            raise ValueError(f"{text!r} keeps no record; drop the source instead")
        if percent and number > 100:
            raise ValueError(f"{text!r} is more than 100%; oversample with repeat: K")
        return Sampling(kind, count=None if percent else number, percent=number if percent else None)


@dataclass
class DataSource:
    """One annotation file of a mixture: ``data.train`` / ``data.val`` as a list of these (lrc/data/mixture.py,
    docs/data.md). ``annotations`` is required (validation says so); paths are relative to ``data.root``."""

    annotations: Optional[LocalPath] = None  # the annotation file (any format)
    root: Optional[LocalPath] = None  # media paths resolve against this folder; default: the file's folder
    format: Literal[SOURCE_FORMATS] = "auto"
    # all | first:N | first:N% | end:N | end:N% | random:N | random:N% | N (= random:N); chosen once per run
    sampling: Union[Annotated[str, Text("all, first:N[%], end:N[%], random:N[%] or N")], PositiveInt] = "all"
    repeat: PositiveInt = 1  # the sampled records K times over (oversampling)


@dataclass
class DataConfig:
    root: str = "data/synth"  # corpus folder; train/val are relative to it
    # an annotation file (any format, detected), or a mixture: a list of sources
    train: Union[str, list[DataSource]] = "train.jsonl"
    val: Union[str, list[DataSource]] = "val.jsonl"
    frame_folder_fps: PositiveFloat = 1.0  # frame rate of a folder of frames whose record gives no fps
    synth_videos: Optional[PositiveInt] = None  # synthesise a corpus of this many videos if root is missing
    synth_seed: Optional[NonNegativeInt] = None  # the corpus's seed (None: run.seed); another seed, other videos
    synth_answer_style: Literal[ANSWER_STYLES] = "letter"  # see docs/data.md
    synth_multi_turn_train: bool = False  # train records: one multi-turn conversation per video
    synth_tasks: list[Literal[SYNTH_TASKS]] = field(default_factory=lambda: ["mcq"])
    sampler: Annotated[dict, Plugin(SAMPLERS)] = field(default_factory=lambda: {"name": "uniform"})
    tokenizer: Optional[str] = None  # None: the LLM's pretrained folder, else {root}/tokenizer
    batch_size: PositiveInt = 4
    eval_batch_size: Optional[PositiveInt] = None
    # DataLoader worker processes (persistent); None: one per 4 of run.threads, at least 1, where the platform can
    # run them (else 0); 0: load and decode in the training process (lrc/cpus.py)
    num_workers: Optional[NonNegativeInt] = None
    max_length: PositiveInt = 4096
    cache_frames: bool = False  # keep decoded frames in RAM (deterministic samplers only)
    tasks: Optional[list[Literal[TASKS]]] = None  # use only records of these tasks (None: all)
    read_timeout_s: PositiveFloat = 30.0  # give up on a video open/read after this long; the sample is skipped
    # media paths must resolve inside data.root (no absolute paths elsewhere, no ../ or symlinks out of it);
    # true lets a record name any file lrc can read (docs/data.md, "Where media may be")
    allow_outside_root: bool = False
    max_bad_fraction: UnitInterval = 0.05  # stop the run when more than this fraction of a split is unreadable
    packing: PackingConfig = field(default_factory=PackingConfig)


@dataclass
class TokenDropout:
    """``model.token_dropout``, HiCo level 2 (lrc/model/token_dropout.py), and the schedule the model runs:
    ``layers[i]`` is the decoder layer *before* which ``ratios[i]`` of the original visual tokens are kept."""

    enabled: bool = False
    layers: list[NonNegativeInt] = field(default_factory=lambda: [8, 16, 24])
    ratios: list[DropRatio] = field(default_factory=lambda: [0.5, 0.25, 0.125])
    mode: Literal[TOKEN_DROPOUT_MODES] = "uniform_then_attention"
    uniform_stages: NonNegativeInt = 1  # with uniform_then_attention: how many first drop layers are uniform
    bernoulli: bool = False  # in training, keep each visual token with probability target/current (eq. 2)

    def problems(self, num_layers: Optional[int] = None) -> list[str]:
        """What the field types cannot say: the lists pair up, layers increase, ratios do not (and, once the
        LLM is known, every layer exists)."""
        out = []
        if len(self.layers) != len(self.ratios) or not self.layers:
            out.append(f"layers ({len(self.layers)}) and ratios ({len(self.ratios)}) must be non-empty lists of one "
                       "length: ratios[i] applies before decoder layer layers[i]")
        if any(b <= a for a, b in zip(self.layers, self.layers[1:])):
            out.append(f"layers must be increasing layer indices, got {self.layers}")
        if num_layers is not None and any(layer >= num_layers for layer in self.layers):
            out.append(f"layers {self.layers} must be < the LLM's {num_layers} decoder layers")
        if any(b > a for a, b in zip(self.ratios, self.ratios[1:])):
            out.append(f"ratios must be non-increasing (fractions of the original visual count), got {self.ratios}")
        return out

    def method(self, stage: int) -> str:
        if self.mode == "uniform_then_attention":
            return "uniform" if stage < self.uniform_stages else "attention"
        return self.mode


@dataclass
class InitConfig:
    """``model.init``: weights loaded after the model is built (lrc/weights/pretrained.py, docs/checkpoints.md)."""

    path: Optional[LocalPath] = None  # an lrc run / export, a transformers InternVL folder, an InternVL2.5 checkpoint
    layout: Literal[LAYOUTS] = "auto"
    components: Optional[list[Component]] = None  # None: every component the checkpoint has
    strict: bool = True


@dataclass
class ModelConfig:
    encoder: Annotated[dict, Plugin(ENCODERS)] = field(default_factory=lambda: {"name": "timm_vit"})
    compressor: Annotated[dict, Plugin(COMPRESSORS)] = field(default_factory=lambda: {"name": "tome"})
    projector: Annotated[dict, Plugin(PROJECTORS)] = field(default_factory=lambda: {"name": "mlp"})
    llm: Annotated[dict, Plugin(LLMS)] = field(default_factory=lambda: {"name": "hf_causal_lm"})
    token_dropout: TokenDropout = field(default_factory=TokenDropout)
    # TPO heads (lrc/model/tpo.py): label -> head plugin slot, e.g. {temporal: {name: cgdetr}}; a label set
    # to null removes that head (model.heads.mask=null)
    heads: dict[str, Optional[Annotated[dict, Plugin(HEADS)]]] = field(default_factory=dict)
    init: Optional[InitConfig] = field(default_factory=InitConfig)
    # the prompt format (chat template) the model reads, a prompts plugin (lrc/data/prompt.py); null: the one
    # model.init's checkpoint implies (internvl2_5 for InternVL2.5 / InternVideo2.5 folders), else chatml
    prompt: Optional[Annotated[dict, Plugin(PROMPTS)]] = None


@dataclass
class LossConfig:
    """L_total = L_base + task_weight·L_task + spec_weight·Σ_k head_weights[k]·L_spec,k  (paper eq. 3),
    plus dpo_weight·L_DPO on preference records."""

    task_weight: NonNegativeFloat = 0.1  # λ1: task recognition from the query (only with heads)
    spec_weight: NonNegativeFloat = 1.0  # λ2: the heads' own losses
    head_weights: dict[str, NonNegativeFloat] = field(default_factory=dict)  # w_k per head label; 1.0 where not given
    dpo_weight: NonNegativeFloat = 0.0  # 0 turns DPO off
    dpo_beta: PositiveFloat = 0.1
    dpo_reference: Literal[DPO_REFERENCES] = "frozen_copy"  # lora_disabled needs model.llm.lora


@dataclass
class OptimConfig:
    # InternVideo2.5 finetuning: ViT 2e-6, connector 1e-5, LLM 1e-5 (docs/config.md, optim);
    # heads (TPO heads, task embeddings, task classifier) start from scratch: a larger rate
    lr: dict[Component, NonNegativeFloat] = field(default_factory=lambda: {
        "encoder": 2e-6, "compressor": 1e-5, "projector": 1e-5, "llm": 1e-5, "heads": 1e-4})
    freeze: list[Component] = field(default_factory=list)
    weight_decay: NonNegativeFloat = 0.0  # on weights, never on biases and norms; any optimizer
    # the optimizer plugin: its arguments are its own (adamw: betas, eps); the builder gives it the parameter groups
    optimizer: Annotated[dict, Plugin(OPTIMIZERS)] = field(default_factory=lambda: {"name": "adamw"})
    schedule: Literal[SCHEDULES] = "cosine"  # each learning rate over the steps, after the warmup
    warmup_ratio: UnitInterval = 0.03  # linear warmup from 0 over this fraction of the steps
    min_lr_ratio: UnitInterval = 0.0  # cosine and linear end at this fraction of each learning rate


@dataclass
class DistributedConfig:
    """Processes, devices and how they share the model: the one shared block (experiments/base.yaml),
    turned into Lightning's accelerator, strategy and precision by lrc/parallel/distributed.py (docs/distributed.md).
    The global batch is data.batch_size × devices × num_nodes (× trainer.accumulate_grad_batches)."""

    strategy: Literal[STRATEGIES] = "auto"
    accelerator: Literal[ACCELERATORS] = "auto"  # auto: cuda when available, else cpu
    # processes per node: a count, -1 or "auto" (every GPU), or GPU ids
    devices: Union[PositiveInt, Literal[-1, "auto"], list[NonNegativeInt]] = 1
    num_nodes: PositiveInt = 1
    precision: Literal[PRECISIONS] = "auto"  # auto: bf16-mixed on CUDA (16-mixed without bf16), 32-true on CPU
    activation_checkpointing: bool = False  # recompute ViT and LLM decoder blocks in backward (§3.5 memory)
    fsdp_sharding: Literal[FSDP_SHARDINGS] = "full"
    zero_stage: Literal[ZERO_STAGES] = 2  # deepspeed ZeRO stage
    offload: bool = False  # fsdp: parameters to CPU; deepspeed: optimizer state (stage >= 2), parameters (3)
    find_unused_parameters: bool = False  # ddp: some trainable parameters get no gradient in a step
    backend: Optional[Literal[BACKENDS]] = None  # process group backend; None: nccl on CUDA, gloo on CPU
    timeout_s: PositiveFloat = 1800.0  # how long a collective waits for the other ranks


@dataclass
class NiahConfig:
    """Needle-in-a-haystack evaluation (paper Fig. 3; lrc/commands/niah.py, docs/niah.md): haystacks of each frame
    count (1 frame per second of video) × needle depth × hop count, scored teacher-forced by exact match."""

    frame_counts: list[PositiveInt] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # in increasing order
    depths: list[UnitInterval] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # 0: start, 1: end
    needle_frames: PositiveInt = 4  # the needle image repeated as one clip (the compressor's clip_len)
    hops: list[Literal[1, 2]] = field(default_factory=lambda: [1, 2])  # 1: single-hop, 2: two needles, their order
    questions_per_cell: PositiveInt = 4
    memory_cap_gib: Optional[PositiveFloat] = None  # a forward's peak above this counts as out of memory
    root: str = "data/niah"  # haystack videos and records, cached (written only when missing)
    seed: Seed = 0
    size: Annotated[int, Range(min=16)] = 64  # haystack frame side in pixels (even: yuv420p)
    after_fit: bool = False  # `lrc fit` runs the evaluation after training and adds niah/* to metrics.json


@dataclass
class BenchConfig:
    """One benchmark of ``eval.benches`` (lrc/evaluation/, docs/evaluation.md); ``name`` and ``data`` are required
    (validation says so). The other keys are ``lrc eval``'s options of the same names."""

    name: Optional[Literal[BENCHMARKS]] = None
    data: Optional[LocalPath] = None  # the benchmark's folder, in its published layout
    limit: Optional[PositiveInt] = None  # at most this many items, drawn in turn from each category
    num_frames: Optional[PositiveInt] = None  # None: the benchmark's reference frame count
    sampler: Literal[EVAL_SAMPLERS] = "uniform"
    subtitles: bool = False  # videomme: with subtitles
    max_new_tokens: Optional[PositiveInt] = None  # None: the benchmark's reference limit
    # mvbench only: when `data` does not exist, write the synthetic MVBench-format set of this many videos there
    synth_videos: Optional[PositiveInt] = None


@dataclass
class EvalConfig:
    """Standard benchmarks (``lrc eval``, docs/evaluation.md). With ``after_fit``, ``lrc fit`` runs every bench of
    ``benches`` after training and adds their eval/* figures to the run's metrics.json (an ablation column)."""

    after_fit: bool = False
    benches: list[BenchConfig] = field(default_factory=list)


SECTIONS: dict[str, type] = {"run": RunConfig, "data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
                             "loss": LossConfig, "distributed": DistributedConfig, "niah": NiahConfig,
                             "eval": EvalConfig}

# ``trainer`` is bound to lightning.Trainer's own signature; these are lrc's defaults for it, and ranges for
# the numeric arguments whose annotations say only "int" or "float". devices, strategy and precision are not
# trainer keys but the ``distributed`` block's (DISTRIBUTED_KEYS); the OWNED_TRAINER_KEYS are lrc's.
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 1, "log_every_n_steps": 10, "num_sanity_val_steps": 0}
TRAINER_RANGES: dict[str, Range] = {
    "max_epochs": Range(min=-1),  # -1: no limit
    "min_epochs": Range(min=0),
    "max_steps": Range(min=-1),
    "min_steps": Range(min=0),
    "limit_train_batches": Range(min=0),
    "limit_val_batches": Range(min=0),
    "limit_test_batches": Range(min=0),
    "limit_predict_batches": Range(min=0),
    "overfit_batches": Range(min=0),
    "val_check_interval": Range(min=0, min_open=True),
    "check_val_every_n_epoch": Range(min=1),
    "num_sanity_val_steps": Range(min=-1),
    "log_every_n_steps": Range(min=0),
    "accumulate_grad_batches": Range(min=1),
    "gradient_clip_val": Range(min=0),
    "reload_dataloaders_every_n_epochs": Range(min=0),
}
DISTRIBUTED_KEYS = {"accelerator": "accelerator", "devices": "devices", "num_nodes": "num_nodes",
                    "strategy": "strategy", "precision": "precision"}
OWNED_TRAINER_KEYS = ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "plugins")


# ---------------------------------------------------------------------------------------------
# Reading the schema
# ---------------------------------------------------------------------------------------------
def hints(schema: type) -> dict[str, Any]:
    """A dataclass's field annotations with their Annotated markers."""
    return typing.get_type_hints(schema, include_extras=True)


def plugin_marker(annotation: Any) -> Optional[Plugin]:
    """The Plugin marker of a slot's annotation (through ``| None``), else None."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Plugin)), None)
    return None


def plugin_list_marker(annotation: Any) -> Optional[PluginList]:
    """The PluginList marker of a list-of-plugins annotation, else None."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, PluginList)), None)
    return None


def _slots(schema: type, prefix: str) -> tuple[dict[str, Registry], dict[str, Registry]]:
    """(fixed slots, mappings of labelled slots) under a dataclass, by dotted key."""
    fixed, labelled = {}, {}
    for name, annotation in hints(schema).items():
        key = f"{prefix}.{name}"
        marker = plugin_marker(annotation)
        if marker is not None:
            fixed[key] = marker.registry
        elif typing.get_origin(annotation) is dict and plugin_marker(typing.get_args(annotation)[1]) is not None:
            labelled[key] = plugin_marker(typing.get_args(annotation)[1]).registry  # type: ignore[union-attr]
        elif dataclasses.is_dataclass(annotation):
            more = _slots(annotation, key)
            fixed.update(more[0])
            labelled.update(more[1])
    return fixed, labelled


_FIXED: dict[str, Registry] = {}
_LABELLED: dict[str, Registry] = {}
for _section, _schema in SECTIONS.items():
    _found = _slots(_schema, _section)
    _FIXED.update(_found[0])
    _LABELLED.update(_found[1])

# every slot with a fixed key, read from the schema: {"data.sampler": SAMPLERS, "model.encoder": ENCODERS, ...}
PLUGIN_SLOTS: dict[str, Registry] = dict(_FIXED)
# mappings of labelled slots: {"model.heads": HEADS}; each non-null label is a slot
LABELLED_SLOTS: dict[str, Registry] = dict(_LABELLED)
# lists of plugins: {"run.loggers": LOGGERS, "run.callbacks": CALLBACKS}; item i is the slot "run.loggers.i"
LISTED_SLOTS: dict[str, Registry] = {f"{section}.{name}": marker.registry for section, schema in SECTIONS.items()
                                     for name, annotation in hints(schema).items()
                                     if (marker := plugin_list_marker(annotation)) is not None}


def slot_node(cfg: dict[str, Any], slot: str) -> Any:
    node: Any = cfg
    for part in slot.split("."):
        if isinstance(node, list) and part.isdigit():  # an item of a list of plugins (run.loggers.0)
            node = node[int(part)] if int(part) < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def listed_slots(cfg: dict[str, Any]) -> dict[str, Registry]:
    """The items of a config's lists of plugins as slots: ``{"run.loggers.0": LOGGERS, ...}``."""
    out = {}
    for key, registry in LISTED_SLOTS.items():
        node = slot_node(cfg, key)
        if isinstance(node, list):
            out.update({f"{key}.{i}": registry for i in range(len(node))})
    return out


def head_slots(cfg: dict[str, Any]) -> dict[str, Registry]:
    """``model.heads.<label>`` slots of a config (labels whose value is null are removed heads)."""
    return {slot: registry for slot, registry in labelled_slots(cfg).items() if slot.startswith("model.heads.")}


def labelled_slots(cfg: dict[str, Any]) -> dict[str, Registry]:
    out = {}
    for key, registry in LABELLED_SLOTS.items():
        node = slot_node(cfg, key)
        if isinstance(node, dict):
            out.update({f"{key}.{label}": registry for label, value in node.items() if value is not None})
    return out


def plugin_slots(cfg: dict[str, Any]) -> dict[str, Registry]:
    """Every plugin slot of a config: the fixed ones and its labelled ones (heads)."""
    return {**PLUGIN_SLOTS, **labelled_slots(cfg)}


def defaults() -> dict[str, Any]:
    """The built-in defaults of every section, as plain containers."""
    out = {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}
    out["trainer"] = dict(TRAINER_DEFAULTS)
    return out
