"""The shared distributed block (``distributed:`` in experiments/base.yaml, docs/distributed.md).

One place turns it into what ``lightning.Trainer`` takes: accelerator, devices, nodes, precision and a
strategy object. The paper trains on many GPUs (§3.5); lrc runs the same YAML on one CPU, on N GPUs
with DDP, or with the model sharded by FSDP or DeepSpeed ZeRO:

* ``ddp``: every rank holds the whole model; gradients are averaged across ranks.
* ``fsdp``: parameters, gradients and optimizer state sharded across ranks. Each repeated transformer
  block of the ViT and of the LLM decoder is its own FSDP unit (gathered for its forward, freed after),
  and ``activation_checkpointing`` recomputes those blocks in backward.
* ``deepspeed``: ZeRO stage 1 (optimizer state), 2 (+ gradients) or 3 (+ parameters) sharding, with
  optional CPU offload. deepspeed is an optional dependency (``pip install deepspeed``).

The blocks are found on the built model (:func:`block_classes`): a component may declare them with a
``block_classes`` attribute (``timm_vit`` does); transformers models declare theirs in
``_no_split_modules`` (``InternVLVisionLayer``, ``Qwen2DecoderLayer``, ...), the units transformers
itself never splits across devices.

Also here: what a process knows of its rank before Lightning has set up the process group (each rank
runs the whole ``lrc fit`` command under torchrun or srun), used so that every rank trains into the
same run dir and only rank 0 writes the run's files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from lrc.ops import is_int
from lrc.errors import LrcError

log = logging.getLogger("lrc")

STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
FSDP_SHARDING = {"full": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "hybrid": "HYBRID_SHARD",
                 "no_shard": "NO_SHARD"}
ZERO_STAGES = (1, 2, 3)
# Strategies that Lightning runs on CUDA devices only (its FSDPStrategy refuses accelerator=cpu).
SHARDED = {"fsdp": "Lightning's FSDP needs CUDA devices; on the CPU use ddp (the model is then not sharded)",
           "deepspeed": "DeepSpeed needs CUDA devices; on the CPU use ddp (the model is then not sharded)"}
BACKENDS = ("nccl", "gloo")
# Lightning's registered strategy names that the block spells differently, and how.
LIGHTNING_NAMES = {
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
RUN_DIR_ENV = "LRC_RUN_DIR"  # rank 0's run dir, inherited by the processes Lightning's launcher starts


class DistributedSetupError(LrcError, RuntimeError):
    """The distributed block asks for something this machine or launch cannot give."""


# ---------------------------------------------------------------------------------------------
# Validation (lrc validate): values only, nothing built, no device touched
# ---------------------------------------------------------------------------------------------
def check_distributed(node: dict[str, Any], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with the block as ``(key, what)``; types were checked against DistributedConfig already,
    so a value of the wrong type is skipped here."""
    from lrc.registry import suggest

    problems: list[tuple[str, str]] = []

    def choice(key: str, known: Iterable[str]) -> bool:
        """Report a string value outside ``known``; True when the value is one of them."""
        value = node.get(key)
        if not isinstance(value, str):
            return False  # null, or a type error reported against DistributedConfig
        if value in known:
            return True
        if key == "strategy" and value in LIGHTNING_NAMES:
            problems.append((key, f"{value!r} is a Lightning strategy name; {LIGHTNING_NAMES[value]}"))
        else:
            problems.append((key, f"unknown {key} {value!r}.{suggest(value, list(known))}"))
        return False

    strategy, accelerator, precision = node.get("strategy"), node.get("accelerator"), node.get("precision")
    choice("strategy", STRATEGIES)
    choice("accelerator", ACCELERATORS)
    choice("fsdp_sharding", FSDP_SHARDING)
    if choice("precision", PRECISIONS) and accelerator == "cpu" and precision not in ("auto", "32-true"):
        problems.append(("precision", f"{precision} needs a GPU but distributed.accelerator is cpu; use auto "
                                      "(32-true on CPU, bf16-mixed on CUDA) or 32-true"))

    devices = node.get("devices")
    if is_int(devices):
        if devices < 1 and devices != -1:
            problems.append(("devices", f"must be at least 1, or -1 / \"auto\" for every GPU, got {devices}"))
    elif isinstance(devices, str):
        if devices != "auto":
            problems.append(("devices", f"{devices!r}: give a count, -1 or \"auto\" (every GPU), or a list of GPU ids"))
    elif isinstance(devices, list):
        if not devices or not all(is_int(d) and d >= 0 for d in devices) or len(set(devices)) != len(devices):
            problems.append(("devices", f"a list names distinct GPU ids (0, 1, ...), got {devices}"))
        elif accelerator == "cpu":
            problems.append(("devices", "a list of GPU ids needs a GPU accelerator; on CPU give a process count"))
    num_nodes = node.get("num_nodes")
    if is_int(num_nodes) and num_nodes < 1:
        problems.append(("num_nodes", f"must be at least 1, got {num_nodes}"))
    timeout = node.get("timeout_s")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and not timeout > 0:
        problems.append(("timeout_s", f"must be a positive number of seconds, got {timeout}"))
    if choice("backend", BACKENDS) and node["backend"] == "nccl" and accelerator == "cpu":
        problems.append(("backend", "nccl needs CUDA devices; on CPU use gloo (or null: nccl on CUDA, gloo on CPU)"))
    stage = node.get("zero_stage")
    if is_int(stage) and stage not in ZERO_STAGES:
        problems.append(("zero_stage", f"DeepSpeed ZeRO stages are 1, 2 and 3, got {stage}"))
    if strategy in SHARDED and accelerator == "cpu":
        problems.append(("strategy", SHARDED[strategy]))
    if strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            problems.append(("strategy", "deepspeed is not installed. Install it on the GPU machines that train "
                                         "(pip install deepspeed; it builds its CUDA ops on first use), or use "
                                         "strategy: fsdp, which needs nothing beyond torch"))
        if stage == 1 and node.get("offload") is True:
            problems.append(("offload", "ZeRO-Offload needs zero_stage 2 (optimizer state to CPU) or 3 (and "
                                        "parameters); stage 1 cannot offload"))

    llm = ((cfg.get("model") or {}).get("llm")) or {}
    if node.get("activation_checkpointing") is True and isinstance(llm, dict) and llm.get("gradient_checkpointing"):
        problems.append(("activation_checkpointing", "model.llm.gradient_checkpointing is on as well; keep one "
                                                     "(distributed.activation_checkpointing covers ViT and LLM blocks)"))
    return problems


# ---------------------------------------------------------------------------------------------
# Building what lightning.Trainer takes
# ---------------------------------------------------------------------------------------------
def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The repeated transformer block classes in ``model`` (ViT layers, LLM decoder layers): FSDP's
    wrapping units and what activation checkpointing recomputes. See the module docstring."""
    classes: set[type[nn.Module]] = set()
    names: set[str] = set()
    for module in model.modules():
        declared = getattr(module, "block_classes", None)
        if isinstance(declared, (list, tuple, set)):
            classes.update(declared)
        no_split = getattr(module, "_no_split_modules", None)
        if isinstance(no_split, (list, tuple, set)):
            names.update(no_split)
    classes.update(type(m) for m in model.modules() if type(m).__name__ in names)
    return classes


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` is CUDA when a device is visible, else CPU."""
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" else accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on CUDA (16-mixed on GPUs without bf16, e.g. V100), 32-true on CPU."""
    if precision != "auto":
        return precision
    if accelerator == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _multi_process(node: dict[str, Any]) -> bool:
    devices = node["devices"]
    return node["num_nodes"] > 1 or not (devices == 1 or (isinstance(devices, list) and len(devices) == 1))


def build_strategy(node: dict[str, Any], model: nn.Module, accelerator: str) -> Any:
    """The Lightning strategy of the block: a strategy object, or ``"auto"`` for one device."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

    name = node["strategy"]
    common = {"process_group_backend": node["backend"], "timeout": timedelta(seconds=node["timeout_s"])}
    if name == "auto":
        if not _multi_process(node):
            return "auto"  # one device: Lightning's single-device strategy
        name = "ddp"
    if name == "ddp":
        return DDPStrategy(find_unused_parameters=node["find_unused_parameters"], **common)
    if name == "fsdp":
        blocks = block_classes(model)
        if not blocks:
            log.warning("fsdp: no transformer block classes found on the model; it is one FSDP unit")
        mesh = None
        if node["fsdp_sharding"] == "hybrid" and isinstance(node["devices"], int) and node["devices"] > 0:
            mesh = (node["num_nodes"], node["devices"])  # replicate across nodes, shard within one
        return FSDPStrategy(
            auto_wrap_policy=blocks or None,
            activation_checkpointing_policy=blocks if node["activation_checkpointing"] and blocks else None,
            sharding_strategy=FSDP_SHARDING[node["fsdp_sharding"]], cpu_offload=node["offload"],
            # one full last.ckpt on rank 0: `lrc test` and `lrc export` read it like any other run's
            state_dict_type="full", device_mesh=mesh, **common)
    if name == "deepspeed":
        stage, offload = node["zero_stage"], node["offload"]
        return DeepSpeedStrategy(stage=stage, offload_optimizer=offload and stage >= 2,
                                 offload_parameters=offload and stage == 3,
                                 process_group_backend=node["backend"], timeout=common["timeout"])
    raise DistributedSetupError(f"distributed.strategy: {name!r} is not one of {', '.join(STRATEGIES)}")


def trainer_arguments(node: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """accelerator, devices, num_nodes, precision and strategy for ``lightning.Trainer``."""
    accelerator = resolve_accelerator(node["accelerator"])
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise DistributedSetupError("distributed.accelerator asks for CUDA but no CUDA device is visible here; "
                                    "set distributed.accelerator=cpu (or auto) to run on the CPU")
    if accelerator == "cpu" and node["strategy"] in SHARDED:
        raise DistributedSetupError(f"distributed.strategy={node['strategy']}: {SHARDED[node['strategy']]}. No CUDA "
                                    "device is visible here (distributed.accelerator resolved to cpu)")
    precision = resolve_precision(node["precision"], accelerator)
    if accelerator == "cpu" and precision != "32-true":
        raise DistributedSetupError(f"distributed.precision={precision} needs a GPU, and this run is on the CPU "
                                    "(no CUDA device visible); set distributed.precision=auto or 32-true")
    return {"accelerator": accelerator, "devices": node["devices"], "num_nodes": node["num_nodes"],
            "precision": precision, "strategy": build_strategy(node, model, accelerator)}


def apply_activation_checkpointing(model: nn.Module, node: dict[str, Any]) -> int:
    """Recompute the transformer blocks in backward instead of keeping their activations, for every
    strategy but fsdp (Lightning's FSDP applies it to the same blocks itself). Returns the number of
    blocks wrapped. Non-reentrant checkpointing: works with DDP and with frozen inputs."""
    if not node["activation_checkpointing"] or node["strategy"] == "fsdp":
        return 0
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing as wrap, checkpoint_wrapper)

    blocks = tuple(block_classes(model))
    if not blocks:
        raise DistributedSetupError("distributed.activation_checkpointing: no transformer block classes found on "
                                    "the model (see docs/distributed.md); turn it off")
    count = sum(isinstance(m, blocks) for m in model.modules())
    wrap(model, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
         check_fn=lambda m: isinstance(m, blocks))
    return count


# ---------------------------------------------------------------------------------------------
# Ranks before the process group: run dir and corpus shared by every rank
# ---------------------------------------------------------------------------------------------
def launch_world_size() -> int:
    """How many processes the launcher started (torchrun: WORLD_SIZE; srun: SLURM_NTASKS), else 1."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return int(env["WORLD_SIZE"])
    return int(env.get("SLURM_NTASKS", "1")) if "SLURM_PROCID" in env else 1


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0, from what its launcher put in the environment: torchrun
    sets RANK; srun SLURM_PROCID; Lightning's own launcher NODE_RANK and LOCAL_RANK of its children."""
    env = os.environ
    if "RANK" in env:
        return env["RANK"] == "0"
    if "SLURM_PROCID" in env and launch_world_size() > 1:
        return env["SLURM_PROCID"] == "0"
    return env.get("NODE_RANK", "0") == "0" and env.get("LOCAL_RANK", "0") == "0"


def launch_run_name() -> str | None:
    """A run dir name every rank of a multi-process launch derives alike: torchrun's rendezvous id
    (random per launch with --standalone; --rdzv-id otherwise) or the SLURM job id."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}"
    job = os.environ.get("SLURM_JOB_ID")
    if job and launch_world_size() > 1:
        return f"slurm-{job}"
    return None


def wait_for_files(paths: Iterable[Path], what: str, timeout_s: float = 3600.0, poll_s: float = 2.0) -> None:
    """Block a rank > 0 until rank 0 has written ``paths`` (there is no process group yet to wait on)."""
    paths = list(paths)
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise DistributedSetupError(f"waited {timeout_s:.0f}s for rank 0 to write {what} "
                                        f"({', '.join(map(str, paths))}); did rank 0 fail? See its log")
        time.sleep(poll_s)
