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

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from lrc.config.schema import CUDA_ONLY_STRATEGIES, STRATEGIES
from lrc.errors import LrcError

log = logging.getLogger("lrc")

# the block's choices are the schema's (lrc/config/schema.py); here, what each fsdp_sharding is in torch
FSDP_SHARDING = {"full": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "hybrid": "HYBRID_SHARD",
                 "no_shard": "NO_SHARD"}
RUN_DIR_ENV = "LRC_RUN_DIR"  # rank 0's run dir, inherited by the processes Lightning's launcher starts


class DistributedSetupError(LrcError, RuntimeError):
    """The distributed block asks for something this machine or launch cannot give."""


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
    if accelerator == "cpu" and node["strategy"] in CUDA_ONLY_STRATEGIES:
        raise DistributedSetupError(f"distributed.strategy={node['strategy']}: "
                                    f"{CUDA_ONLY_STRATEGIES[node['strategy']]}. No CUDA "
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
