"""Weights from a local checkpoint into a model lrc has built (``model.init``), in any of four layouts.

A config builds the model (its sizes come from the YAML); ``model.init`` then fills it from a checkpoint,
tensor by tensor, shard by shard, so an 8B checkpoint is never held twice in memory. Nothing is
downloaded, no code from the checkpoint runs (safetensors or ``weights_only`` reads only, see
lrc/weights/checkpoints.py; config.json is read as JSON), and nothing is guessed silently: every weight lands in
one named place or is reported.

Layouts (``model.init.layout``; ``auto`` tells them apart from config.json and the key names):

``lrc``              lrc's own: ``checkpoints/last.ckpt`` of a run, ``model.safetensors`` of ``lrc export``
                     (keys ``model.encoder.*``, ``model.llm.*`` ...) or a bare VideoMLLM state dict.
                     This is how training stage 2 starts from stage 1 (paper §3.5; docs/checkpoints.md).
``internvl_hf``      a transformers ``InternVLForConditionalGeneration`` folder (``save_pretrained``):
                     ``model.vision_tower.*`` → encoder (``internvl_vit``), ``model.multi_modal_projector.*``
                     → projector (``mlp``), ``model.language_model.*`` + ``lm_head`` → LLM (``hf_causal_lm``).
                     The older prefixes (``vision_tower.*``, ``language_model.model.*``) load too.
``internvl_remote``  the original InternVL2.5 / InternVideo2.5 remote-code folders (``vision_model.*``,
                     ``mlp1.{0,1,3}.*``, ``language_model.*``, config.json with ``vision_config`` and
                     ``llm_config``), mapped by name without running their modeling files: InternViT's fused
                     ``attn.qkv`` is split into q/k/v, ``ls1/ls2`` become ``lambda_1/2`` ...; an InternLM2 LLM
                     becomes a transformers ``llama`` model (``attention.wqkv`` unpacked per kv group), a
                     Qwen2/Llama LLM maps 1:1. InternVideo2.5's TPO parts (task token embeddings, the
                     location encoder/decoder, SAM2 and its prompt MLPs) go into lrc's heads where a head of
                     that task is configured and the shapes fit; every other TPO weight (its CG-DETR, which
                     lrc's ``cgdetr`` does not share a layout with) is listed by name in the report, not an error.

Settings that hold no weights follow from an InternVL folder's config.json (:func:`implied_settings`): the
prompt format its LLM was trained with, and the width of HiCo's merge metric (the token width over the LLM's
attention heads, as InternVideo2.5's ``merge_tokens`` computes it).

The LLM's embedding rows follow the tokenizer: lrc adds its own special tokens (``<IMG_CONTEXT>``, TPO's
task tokens), so a model may have more rows than the checkpoint (the extra rows keep their fresh
initialisation and are reported) or fewer (the model's embeddings grow to the checkpoint's rows).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from lrc.config.schema import COMPONENTS, LAYOUTS, InitConfig
from lrc.weights.checkpoints import CheckpointError, load_state_dict_file

log = logging.getLogger(__name__)

_EXAMPLES = 4  # keys shown per kind of problem


# ---------------------------------------------------------------------------------------------
# Reading a checkpoint: a file, or a folder of (sharded) safetensors / weights-only torch files
# ---------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    path: Path
    files: list[Path]
    config: dict[str, Any] | None  # config.json of a model folder, read as plain JSON

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every (key, tensor), one file at a time (a shard is released before the next is read)."""
        for file in self.files:
            state = load_state_dict_file(file)
            if isinstance(state.get("model"), dict):
                state = state["model"]  # {"model": state_dict}, as SAM2 and some trainers save
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    yield key, value
            del state

    def first_keys(self, n: int = 64) -> list[str]:
        """Key names without reading tensors where the format allows it (safetensors headers)."""
        keys: list[str] = []
        for file in self.files:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as f:
                    keys += list(f.keys())
            else:  # a weights-only torch file has no header: read it
                keys += [k for k, _ in Checkpoint(self.path, [file], None).tensors()]
            if len(keys) >= n:
                break
        return keys[:n]


def open_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if path.is_file():
        return Checkpoint(path, [path], None)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist. Give a checkpoint file (.safetensors, .ckpt, .pt, "
                              ".bin) or a model folder (config.json + safetensors shards).")
    config = None
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path / 'config.json'} is not valid JSON ({exc})") from exc
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
            files = [path / name for name in sorted(set(weight_map.values()))]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(f"{index} names shards that are not in {path}: {absent[:_EXAMPLES]}; "
                                      "copy the whole checkpoint folder")
            return Checkpoint(path, files, config)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return Checkpoint(path, [path / name], config)
    if (path / "checkpoints" / "last.ckpt").is_file():  # an lrc run dir: its latest checkpoint
        return Checkpoint(path, [path / "checkpoints" / "last.ckpt"], None)
    raise CheckpointError(f"{path} holds no weights lrc can read: expected model.safetensors, "
                          "model.safetensors.index.json (+ shards), pytorch_model.bin(.index.json), or an lrc export "
                          f"(model.safetensors); found {sorted(p.name for p in path.iterdir())[:8]}")


# ---------------------------------------------------------------------------------------------
# Layouts: a checkpoint key (and tensor) → keys of lrc's VideoMLLM ("encoder.vit...", "llm.model...")
# ---------------------------------------------------------------------------------------------
Converter = Callable[[str, torch.Tensor], list[tuple[str, torch.Tensor]]]


def layout_from_config(cfg: dict[str, Any]) -> str | None:
    """The InternVL layout a config.json describes, or None."""
    if cfg.get("model_type") == "internvl_chat" or "llm_config" in cfg:
        return "internvl_remote"
    if cfg.get("model_type") == "internvl" or ("text_config" in cfg and "vision_config" in cfg):
        return "internvl_hf"
    return None


def detect_layout(ckpt: Checkpoint) -> str:
    found = layout_from_config(ckpt.config or {})
    if found is not None:
        return found
    keys = ckpt.first_keys()
    if any(k.startswith(("vision_model.", "mlp1.")) for k in keys):
        return "internvl_remote"
    if any(k.startswith(("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.",
                         "multi_modal_projector.")) for k in keys):
        return "internvl_hf"
    if any(k.split(".")[0] in COMPONENTS or (k.startswith("model.") and k.split(".")[1] in COMPONENTS) for k in keys):
        return "lrc"
    raise CheckpointError(f"cannot tell the layout of {ckpt.path} (keys such as {keys[:_EXAMPLES]}); set "
                          f"model.init.layout to one of {', '.join(LAYOUTS[1:])} (docs/checkpoints.md)")


def lrc_converter(_: Checkpoint) -> Converter:
    def convert(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        # a Lightning checkpoint / lrc export holds the LightningModule's keys: "model." + VideoMLLM's
        if key.startswith("model.") and key.split(".")[1] in COMPONENTS:
            key = key[len("model."):]
        return [(key, value)]
    return convert


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


# transformers-native InternVL: the LLM is a base model (no head) plus a separate lm_head.
_HF_RULES = [
    (r"^(model\.)?vision_tower\.", "encoder.vit."),
    (r"^(model\.)?multi_modal_projector\.layer_norm\.", "projector.norm."),
    (r"^(model\.)?multi_modal_projector\.linear_1\.", "projector.fc1."),
    (r"^(model\.)?multi_modal_projector\.linear_2\.", "projector.fc2."),
    (r"^model\.language_model\.", "llm.model.model."),  # transformers >= 4.52
    (r"^language_model\.model\.", "llm.model.model."),  # older save_pretrained / hub "-hf" folders
    (r"^(language_model\.)?lm_head\.", "llm.model.lm_head."),
]


def internvl_hf_converter(_: Checkpoint) -> Converter:
    def convert(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        return [(_rename(key, _HF_RULES), value)]
    return convert


# Original InternViT (modeling_intern_vit.py) → transformers' InternVLVisionModel, which lrc's encoder wraps.
_VIT_RULES = [
    (r"^vision_model\.", "encoder.vit."),
    (r"\.embeddings\.class_embedding$", ".embeddings.cls_token"),
    (r"\.embeddings\.position_embedding$", ".embeddings.position_embeddings"),
    (r"\.embeddings\.patch_embedding\.", ".embeddings.patch_embeddings.projection."),
    (r"\.encoder\.layers\.", ".encoder.layer."),
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]
# InternVL's mlp1 = Sequential(LayerNorm, Linear, GELU, Linear): indices 0, 1, 3 (2 is the GELU)
_MLP1_RULES = [(r"^mlp1\.0\.", "projector.norm."), (r"^mlp1\.1\.", "projector.fc1."), (r"^mlp1\.3\.", "projector.fc2.")]
# InternLM2 (modeling_internlm2.py) → transformers' llama: same blocks, other names.
_INTERNLM2_RULES = [
    (r"^language_model\.output\.", "llm.model.lm_head."),
    (r"^language_model\.", "llm.model."),
    (r"\.tok_embeddings\.", ".embed_tokens."),
    (r"\.attention\.wo\.", ".self_attn.o_proj."),
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"\.attention_norm\.", ".input_layernorm."),
    (r"\.ffn_norm\.", ".post_attention_layernorm."),
]


def split_internvit_qkv(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InternViT's fused ``attn.qkv`` rows are [q; k; v], each ``hidden`` rows with heads contiguous
    (its forward reshapes the output to ``(3, heads, head_dim)``), so a plain split in thirds."""
    if qkv.shape[0] % 3:
        raise CheckpointError(f"InternViT attn.qkv has {qkv.shape[0]} rows, not a multiple of 3")
    return tuple(t.contiguous() for t in qkv.chunk(3, dim=0))  # type: ignore[return-value]


def unpack_internlm2_wqkv(wqkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int):
    """InternLM2's ``attention.wqkv`` → llama's q_proj, k_proj, v_proj weights.

    InternLM2 packs the rows per key/value head: for kv head ``h`` come its ``g = num_heads / num_kv_heads``
    query heads, then its key head, then its value head, each ``head_dim`` rows (its forward views the
    output as ``(h, g + 2, head_dim)``). Query head ``h·g + j`` is slot ``j`` of group ``h``, which is the
    query head llama's grouped-query attention pairs with kv head ``h``, so the q rows keep that order.
    """
    groups = num_heads // num_kv_heads
    if num_heads % num_kv_heads or wqkv.shape[0] != num_kv_heads * (groups + 2) * head_dim:
        raise CheckpointError(
            f"InternLM2 attention.wqkv has {wqkv.shape[0]} rows; {num_heads} heads / {num_kv_heads} kv heads of dim "
            f"{head_dim} need {num_kv_heads * (groups + 2) * head_dim}. The checkpoint's config.json llm_config and "
            "its weights disagree.")
    packed = wqkv.reshape(num_kv_heads, groups + 2, head_dim, *wqkv.shape[1:])
    q = packed[:, :groups].reshape(num_heads * head_dim, *wqkv.shape[1:])
    k = packed[:, groups].reshape(num_kv_heads * head_dim, *wqkv.shape[1:])
    v = packed[:, groups + 1].reshape(num_kv_heads * head_dim, *wqkv.shape[1:])
    return q.contiguous(), k.contiguous(), v.contiguous()


def remote_llm_kind(config: dict[str, Any] | None) -> str | None:
    llm = (config or {}).get("llm_config") or {}
    names = " ".join([str(llm.get("model_type", ""))] + [str(a) for a in llm.get("architectures") or []]).lower()
    return "internlm2" if "internlm2" in names else (llm.get("model_type") or None)


# InternVideo2.5 / TPO's task parts, by their names in TPO's released model (OpenGVLab/TPO,
# inference/modeling_videochate.py and modeling_base.py): the task embedding of each task token, and the
# modules that have a counterpart in lrc's heads. (task token of the lrc head, attribute, checkpoint index ->
# lrc index); None: the same names below.
TPO_TASK_TOKENS = {"temporal_token": "<temp>", "box_token": "<box>", "track_token": "<track>"}
TPO_MODULES = {
    "loc_encoder.": ("<box>", "encoder", {"0": "0", "2": "2"}),  # Linear(4, D/2), ReLU, Linear(D/2, D)
    "loc_decoder.": ("<box>", "decoder", {"0": "0", "2": "2"}),  # Linear(D, D/2), ReLU, Linear(D/2, 4)
    "track_embed.layers.": ("<track>", "prompt_adapter", {"0": "0", "1": "2"}),  # MLP(D, D, 3·256), ReLU
    "track_embed_decode2.layers.": ("<track>", "box_head", {"0": "0", "1": "2"}),  # MLP(D, D, 4), ReLU
    "sam.": ("<track>", "sam", None),  # SAM2's video predictor: SAM2's own module names
}
# TPO parts lrc has no place for (they are reported by name, never loaded silently)
TPO_UNMAPPED = {
    "cg_model.": "TPO's CG-DETR; lrc's cgdetr head is its own compact rewrite, with other modules and sizes",
    "cg_criterion.": "TPO's CG-DETR loss buffers",
    "temporal_embed.": "TPO's direct span regressor, which lrc's heads do not have",
    "action_embed.": "TPO's actionness regressor, which lrc's heads do not have",
}
TPO_PREFIXES = tuple(TPO_TASK_TOKENS) + tuple(TPO_MODULES) + tuple(TPO_UNMAPPED)
TPO_TARGET = "tpo:"  # what the converter hands the loader for a TPO key; placed against the built model


def is_tpo_key(key: str) -> bool:
    return key in TPO_TASK_TOKENS or key.startswith(TPO_PREFIXES)


def place_tpo(model: nn.Module, key: str, tensor: torch.Tensor) -> tuple[str, int | None, torch.Tensor] | str:
    """Where a TPO key goes in ``model`` — ``(parameter name, row or None, tensor)`` — or why it goes nowhere."""
    heads = getattr(model, "heads", None)
    by_token = {h.task_token: task for task, h in heads.heads.items()} if heads is not None else {}
    if key in TPO_TASK_TOKENS:
        token = TPO_TASK_TOKENS[key]
        if token not in by_token:
            return f"no head with task token {token} in model.heads"
        return "heads.task_embeddings.weight", heads.tasks.index(by_token[token]), tensor.reshape(-1)
    for prefix, (token, attr, index) in TPO_MODULES.items():
        if not key.startswith(prefix):
            continue
        if token not in by_token:
            return f"no head with task token {token} in model.heads"
        task = by_token[token]
        if not hasattr(heads.heads[task], attr):
            return f"head {task!r} ({type(heads.heads[task]).__name__}) has no {attr}"
        rest = key[len(prefix):]
        if index is not None:
            layer, _, leaf = rest.partition(".")
            if layer not in index:
                return f"no counterpart of layer {layer} in {attr}"
            rest = f"{index[layer]}.{leaf}"
        return f"heads.heads.{task}.{attr}.{rest}", None, tensor
    for prefix, why in TPO_UNMAPPED.items():
        if key.startswith(prefix):
            return why
    return "not a TPO part lrc knows"


def internvl_remote_converter(ckpt: Checkpoint) -> Converter:
    llm_cfg = (ckpt.config or {}).get("llm_config") or {}
    kind = remote_llm_kind(ckpt.config)

    def heads() -> tuple[int, int, int]:
        try:
            n, kv = int(llm_cfg["num_attention_heads"]), int(llm_cfg.get("num_key_value_heads") or llm_cfg["num_attention_heads"])
            return n, kv, int(llm_cfg.get("head_dim") or llm_cfg["hidden_size"] // n)
        except KeyError as exc:
            raise CheckpointError(f"{ckpt.path}: unpacking InternLM2's attention.wqkv needs config.json llm_config."
                                  f"{exc.args[0]}; copy the checkpoint's config.json next to its weights") from exc

    def convert(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if key.startswith("vision_model."):
            new = _rename(key, _VIT_RULES)
            if ".attention.qkv." in new:
                q, k, v = split_internvit_qkv(value)
                return [(new.replace(".qkv.", f".{n}_proj."), t) for n, t in zip("qkv", (q, k, v))]
            return [(new, value)]
        if key.startswith("mlp1."):
            return [(_rename(key, _MLP1_RULES), value)]
        if key.startswith("language_model."):
            if kind == "internlm2" or ".attention.wqkv." in key or ".tok_embeddings." in key:
                new = _rename(key, _INTERNLM2_RULES)
                if ".attention.wqkv." in new:
                    q, k, v = unpack_internlm2_wqkv(value, *heads())
                    return [(new.replace(".attention.wqkv.", f".self_attn.{n}_proj."), t) for n, t in zip("qkv", (q, k, v))]
                return [(new, value)]
            return [("llm.model." + key[len("language_model."):], value)]  # Qwen2 / Llama: 1:1
        if is_tpo_key(key):
            return [(TPO_TARGET + key, value)]  # placed against the built model's heads (place_tpo)
        return [(key, value)]  # reported as unexpected
    return convert


CONVERTERS: dict[str, Callable[[Checkpoint], Converter]] = {
    "lrc": lrc_converter, "internvl_hf": internvl_hf_converter, "internvl_remote": internvl_remote_converter}


# ---------------------------------------------------------------------------------------------
# Loading into a built model
# ---------------------------------------------------------------------------------------------
def canonical(name: str) -> str:
    """A parameter name with peft's wrappers taken out (LoRA on the LLM renames its base weights)."""
    name = name.replace(".base_model.model.", ".", 1)
    name = name.replace(".token_adapter.base_layer.", ".")  # trainable token rows (wrap_lora)
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".").replace(".original_module.", ".")


def is_adapter(name: str) -> bool:
    return ".lora_" in name or ".trainable_tokens_delta." in name


@dataclass
class InitReport:
    path: str
    layout: str
    loaded: dict[str, int] = field(default_factory=dict)  # component -> tensors loaded
    kept_init: list[str] = field(default_factory=list)  # components left as built
    vocab: list[str] = field(default_factory=list)  # embedding rows adapted to the tokenizer
    problems: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # "key: why" of checkpoint parts lrc has no place for (TPO)
    notes: list[str] = field(default_factory=list)  # what the user should know about a mapping

    def summary(self) -> str:
        parts = [f"{c}: {n} tensors" for c, n in self.loaded.items()]
        text = f"model.init: loaded {self.path} ({self.layout} layout): {', '.join(parts) or 'nothing'}"
        if self.kept_init:
            text += f"; kept as built: {', '.join(self.kept_init)}"
        if self.vocab:
            text += "; " + "; ".join(self.vocab)
        if self.unmapped:
            text += f"; {len(self.unmapped)} checkpoint weight(s) not mapped (InitReport.unmapped)"
        return text


def _examples(items: list[str]) -> str:
    return ", ".join(items[:_EXAMPLES]) + (f" (+{len(items) - _EXAMPLES} more)" if len(items) > _EXAMPLES else "")


def _vocab_params(model: nn.Module) -> set[int]:
    """ids of the LLM's input/output embedding weights, whose rows follow the tokenizer."""
    llm = getattr(getattr(model, "llm", None), "model", None)
    out = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(llm, getter, lambda: None)() if llm is not None else None
        # trainable token rows under LoRA (hf_causal_lm.wrap_lora) wrap the embedding: its base holds the rows
        module = getattr(getattr(module, "token_adapter", None), "base_layer", module)
        if module is not None and getattr(module, "weight", None) is not None:
            out.add(id(module.weight))
    return out


def _grow_vocab(model: nn.Module, rows: int) -> None:
    llm = model.llm.model
    try:
        llm.resize_token_embeddings(rows, mean_resizing=False)
    except TypeError:  # older transformers
        llm.resize_token_embeddings(rows)


def load_pretrained(model: nn.Module, path: str | Path, layout: str = InitConfig.layout,
                    components: list[str] | None = None, strict: bool = InitConfig.strict) -> InitReport:
    """Fill ``model`` (a VideoMLLM) from the checkpoint at ``path``; raise CheckpointError listing every
    mismatch (or, with ``strict=False``, log them and load what fits)."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"model.init.layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    bad = [c for c in components or [] if c not in COMPONENTS]
    if bad:
        raise CheckpointError(f"model.init.components: unknown component(s) {bad}; use {', '.join(COMPONENTS)}")
    ckpt = open_checkpoint(path)
    layout = detect_layout(ckpt) if layout == "auto" else layout
    convert = CONVERTERS[layout](ckpt)
    report = InitReport(str(path), layout)

    def index() -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
        actual = dict(model.state_dict(keep_vars=True))
        canon: dict[str, list[str]] = defaultdict(list)
        for name in actual:
            if not is_adapter(name):
                canon[canonical(name)].append(name)
        return actual, canon

    actual, canon = index()
    vocab_ids = _vocab_params(model)
    loaded: set[str] = set()
    unexpected, mismatched, skipped = [], [], defaultdict(int)
    wrong_shape: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    vocab_notes: dict[str, str] = {}
    with torch.no_grad():
        for key, value in ckpt.tensors():
            for target, tensor in convert(key, value):
                if target.startswith(TPO_TARGET):
                    _load_tpo(model, key, tensor, actual, components, report, counts, skipped)
                    continue
                names = [target] if target in actual else canon.get(canonical(target), [])
                origin = target if key in (target, f"model.{target}") else f"{target} (from {key})"
                if not names:
                    unexpected.append(origin)
                    continue
                component = names[0].split(".")[0]
                if components is not None and component not in components:
                    skipped[component] += 1
                    continue
                param = actual[names[0]]
                if tensor.shape != param.shape and id(param) in vocab_ids and tensor.dim() == 2 \
                        and tensor.shape[1:] == param.shape[1:] and tensor.shape[0] > param.shape[0]:
                    vocab_notes["grow"] = (f"LLM embeddings grown from {param.shape[0]} to the checkpoint's "
                                           f"{tensor.shape[0]} rows")
                    _grow_vocab(model, tensor.shape[0])
                    actual, canon = index()
                    vocab_ids = _vocab_params(model)
                    names = [target] if target in actual else canon.get(canonical(target), [])
                    param = actual[names[0]]
                for name in names:
                    param = actual[name]
                    if tensor.shape == param.shape:
                        param.copy_(tensor)
                    elif id(param) in vocab_ids and tensor.dim() == 2 and tensor.shape[1:] == param.shape[1:] \
                            and tensor.shape[0] < param.shape[0]:
                        # rows past the checkpoint's vocabulary are tokens lrc added (<IMG_CONTEXT>, TPO's task
                        # tokens): they keep their fresh initialisation and are trained
                        param[: tensor.shape[0]].copy_(tensor)
                        vocab_notes["rows"] = (f"LLM embedding rows {tensor.shape[0]}..{param.shape[0] - 1} (tokens the "
                                               "checkpoint does not have) kept as initialised")
                    else:
                        mismatched.append(f"{origin}: checkpoint {list(tensor.shape)} vs model {list(param.shape)}")
                        wrong_shape.add(name)
                        continue
                    loaded.add(name)
                counts[component] += 1
    report.vocab = list(vocab_notes.values())
    report.loaded = dict(counts)
    wanted = set(components) if components is not None else set(counts)
    loaded_ids = {id(actual[n]) for n in loaded if n in actual}
    reported = loaded | wrong_shape
    # an InternVL checkpoint fills the heads only where TPO's parts have a place; the rest keep their init
    partial = {"heads"} if layout != "lrc" else set()
    missing = [n for n in actual if n.split(".")[0] in wanted - partial and n not in reported and not is_adapter(n)
               and id(actual[n]) not in loaded_ids]  # tied weights (lm_head = embeddings) count once
    report.kept_init = [c for c in COMPONENTS if c not in wanted and any(n.split(".")[0] == c for n in actual)]
    if skipped:
        log.info("model.init: skipped %s (not in model.init.components)",
                 ", ".join(f"{n} tensors of {c}" for c, n in skipped.items()))

    problems = []
    if layout == "lrc":
        hint_cfg = ("the config builds another model than the one saved; build it with the config the checkpoint was "
                    "trained with (the run dir's or the export's config.yaml), changing only what may differ "
                    "(docs/checkpoints.md)")
        hint_plugins = "the checkpoint comes from another model; use its config.yaml"
    else:
        hint_cfg = (f"the config builds a differently sized model than the checkpoint; `lrc checkpoint describe {path}` "
                    "prints model settings that match it")
        hint_plugins = "use the plugins InternVL maps onto: encoder internvl_vit, projector mlp, llm hf_causal_lm"
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_examples(mismatched)}. Fix: {hint_cfg}")
    if missing:
        by = sorted({n.split('.')[0] for n in missing})
        problems.append(f"{len(missing)} weight(s) of {', '.join(by)} missing from the checkpoint: {_examples(missing)}. "
                        f"Fix: {hint_cfg}; or load only the components the checkpoint has "
                        f"(model.init.components=[{', '.join(c for c in COMPONENTS if c in counts and c not in by)}])")
    if unexpected:
        lora = [u for u in unexpected if is_adapter(u)]
        why = (" The checkpoint has LoRA adapters but this model has none (or others): configure the same "
               "model.llm.lora, or load `lrc export`'s merged LLM.") if lora else ""
        problems.append(f"{len(unexpected)} checkpoint weight(s) with no place in the model: {_examples(unexpected)}."
                        f"{why} Fix: check model.init.layout ({layout} was used); {hint_plugins}")
    if report.unmapped:
        groups: dict[str, int] = defaultdict(int)
        for item in report.unmapped:
            groups[item.split(".")[0].split(":")[0]] += 1
        log.warning("model.init: %d weight(s) of %s have no place in this model and were not loaded (%s): %s. "
                    "All of them are listed in the report's `unmapped` (docs/checkpoints.md, TPO parts).",
                    len(report.unmapped), path, ", ".join(f"{g}: {n}" for g, n in sorted(groups.items())),
                    _examples(report.unmapped))
    for note in report.notes:
        log.warning("model.init: %s", note)
    if problems:
        report.problems = problems
        text = f"model.init: {path} ({layout} layout) does not fit the model built from this config:\n  - " + \
            "\n  - ".join(problems)
        if strict:
            raise CheckpointError(text + "\n  (model.init.strict=false loads what fits and only warns)")
        log.warning("%s", text)
    log.info("%s", report.summary())
    return report


def _load_tpo(model: nn.Module, key: str, tensor: torch.Tensor, actual: dict[str, torch.Tensor],
              components: list[str] | None, report: InitReport, counts: dict[str, int], skipped: dict[str, int]) -> None:
    """One TPO weight into the heads (place_tpo), or into ``report.unmapped`` with the reason."""
    placed = place_tpo(model, key, tensor)
    if isinstance(placed, str):
        report.unmapped.append(f"{key}: {placed}")
        return
    name, row, value = placed
    if components is not None and "heads" not in components:
        skipped["heads"] += 1
        return
    if name not in actual:
        report.unmapped.append(f"{key}: the model has no {name}")
        return
    param = actual[name]
    dest = param[row] if row is not None else param
    if dest.shape != value.shape:
        hint = {"encoder": "model.heads.<region>.mlp_hidden = LLM hidden / 2",
                "decoder": "model.heads.<region>.mlp_hidden = LLM hidden / 2",
                "prompt_adapter": "model.heads.<mask>.adapter_hidden = the LLM's hidden size",
                "box_head": "model.heads.<mask>.adapter_hidden = the LLM's hidden size",
                "sam": "model.heads.<mask>.config = the SAM2 the checkpoint has (TPO: configs/sam2/sam2_hiera_l.yaml)"}
        attr = name.split(".")[3] if name.startswith("heads.heads.") else ""
        report.unmapped.append(f"{key}: checkpoint {list(value.shape)} does not fit {name} {list(dest.shape)}"
                               + (f" (set {hint[attr]})" if attr in hint else ""))
        return
    dest.copy_(value)
    counts["heads"] += 1
    if ".prompt_adapter." in name or ".box_head." in name:
        note = ("TPO's track_embed / track_embed_decode2 use ReLU between their layers, sam2_mask's adapter and box "
                "MLP use GELU: the loaded weights compute a different function there; fine-tune the mask head")
        if note not in report.notes:
            report.notes.append(note)


def apply_init(model: nn.Module, init: dict[str, Any] | None) -> InitReport | None:
    """``model.init`` of a validated config, applied after the builder made the model."""
    if not init or not init.get("path"):
        return None
    node = {**dataclasses.asdict(InitConfig()), **init}
    return load_pretrained(model, node["path"], layout=node["layout"], components=node["components"],
                           strict=node["strict"])


# ---------------------------------------------------------------------------------------------
# `lrc checkpoint describe`: the model block that builds a checkpoint's architecture
# ---------------------------------------------------------------------------------------------
# config keys that describe a file, a hub repo or a training run, not the architecture; vocab_size
# comes from the tokenizer (the builder passes it)
_NOT_ARCHITECTURE = {"transformers_version", "architectures", "vocab_size", "_name_or_path", "auto_map", "dtype",
                     "torch_dtype", "use_bfloat16", "_attn_implementation_autoset", "attn_implementation",
                     "_attn_implementation", "use_flash_attn", "output_attentions", "output_hidden_states",
                     "return_dict", "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
                     "is_encoder_decoder", "_commit_hash"}


def architecture(config: Any) -> dict[str, Any]:
    """A transformers config's architecture keys (what `hf_causal_lm` / `internvl_vit` take as `config`)."""
    return {k: v for k, v in config.to_diff_dict().items() if k not in _NOT_ARCHITECTURE}


def _vision_from_remote(v: dict[str, Any]) -> dict[str, Any]:
    """InternVisionConfig (remote code) → transformers' InternVLVisionConfig arguments."""
    from transformers import InternVLVisionConfig

    args = {k: v[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                              "image_size", "patch_size", "hidden_act", "layer_norm_eps", "norm_type",
                              "num_channels") if k in v}
    args.update(attention_bias=v.get("qkv_bias", True), use_qk_norm=v.get("qk_normalization", False),
                attention_dropout=v.get("attention_dropout", 0.0), projection_dropout=v.get("attention_dropout", 0.0),
                use_absolute_position_embeddings=True, use_mean_pooling=True)  # no final LayerNorm, as InternViT
    return architecture(InternVLVisionConfig(**args))


def _llm_from_remote(llm: dict[str, Any]) -> dict[str, Any]:
    """llm_config (remote code) → the hf_causal_lm `config` of the transformers model lrc builds."""
    from transformers import AutoConfig

    if "internlm2" in " ".join([str(llm.get("model_type", ""))] + list(llm.get("architectures") or [])).lower():
        args = {k: llm[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
                                    "tie_word_embeddings", "rope_theta", "bos_token_id", "eos_token_id",
                                    "pad_token_id") if k in llm}
        args["attention_bias"] = bool(llm.get("bias", False))  # InternLM2's one `bias` flag: wqkv and wo
        scaling = llm.get("rope_scaling")
        if scaling:  # InternLM2's dynamic / linear RoPE scaling are transformers' dynamic / linear rope types
            args["rope_scaling"] = {"rope_type": scaling.get("type", scaling.get("rope_type")),
                                    "factor": scaling["factor"]}
        return architecture(AutoConfig.for_model("llama", **args))
    args = {k: v for k, v in llm.items() if k not in _NOT_ARCHITECTURE and k != "model_type"}
    return architecture(AutoConfig.for_model(llm["model_type"], **args))


@dataclass(frozen=True)
class Implied:
    """A setting without weights that a checkpoint's config.json decides (``key`` is a dotted config key)."""

    key: str
    value: Any
    why: str


def merge_metric_width(config: dict[str, Any], layout: str) -> tuple[int, int, str] | None:
    """InternVideo2.5's HiCo merge metric: ``(token width, groups, where the group count comes from)``.

    Its ``merge_tokens`` averages each token's features over ``llm_config.num_attention_heads`` groups
    (``text_config`` in transformers' layout) before the cosine similarity; the tokens are the ViT's after pixel
    shuffle, ``vision hidden × (1 / downsample_ratio)²`` wide (InternVL2.5-8B: 4096 over 32 groups, 128 each)."""
    llm_key = "llm_config" if layout == "internvl_remote" else "text_config"
    vision, llm = config.get("vision_config") or {}, config.get(llm_key) or {}
    hidden, heads = vision.get("hidden_size"), llm.get("num_attention_heads")
    ratio = config.get("downsample_ratio", 0.5)
    if not isinstance(hidden, int) or not isinstance(heads, int) or not ratio:
        return None
    return hidden * round(1 / ratio) ** 2, heads, f"config.json {llm_key}.num_attention_heads"


def is_hico_checkpoint(config: dict[str, Any]) -> bool:
    """InternVideo2.5 / InternVL2.5-HiCo: a chat model whose code merges tokens (``modeling_internvl_chat_hico*``)."""
    return any("hico" in str(v).lower() for v in (config.get("auto_map") or {}).values())


def implied_settings(path: str | Path, layout: str = "auto") -> list[Implied]:
    """What an InternVL folder's config.json says about settings that hold no weights (read as JSON, nothing
    else): the prompt format (``model.prompt``: ``internvl2_5`` when config.json's ``template`` is
    ``internvl2_5``), the merge metric's width (``model.compressor.head_dim`` of ``tome``, see
    :func:`merge_metric_width`) and, for a HiCo-trained checkpoint, the merge's token order (the reference
    order it was trained with: ``restore_order: false``). Other layouts imply nothing."""
    path = Path(path)
    if layout in ("auto", "lrc"):  # a run or an export: the format it was trained with, from its config.yaml
        prompt = _trained_prompt(path)
        if prompt or layout == "lrc":
            return [Implied("model.prompt", prompt[0], f"it was trained with that format ({prompt[1]})")] if prompt else []
    # an InternVL folder: its config.json, read as JSON (no weight is opened)
    file = (path if path.is_dir() else path.parent) / "config.json"
    try:
        config = json.loads(file.read_text()) if file.is_file() else {}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON ({exc})") from exc
    layout = layout_from_config(config) if layout == "auto" else layout
    if layout not in ("internvl_remote", "internvl_hf") or not config:
        return []
    out = []
    if config.get("template") == "internvl2_5":
        out.append(Implied("model.prompt", {"name": "internvl2_5"},
                           "its LLM was trained with InternVL's internvl2_5 chat template (config.json template)"))
    width = merge_metric_width(config, layout)
    if width is not None and width[0] % width[1] == 0:
        out.append(Implied("model.compressor.head_dim", width[0] // width[1],
                           f"InternVideo2.5's merge averages each {width[0]}-wide token over {width[1]} groups "
                           f"({width[2]}), a {width[0] // width[1]}-wide metric"))
    if is_hico_checkpoint(config):
        out.append(Implied("model.compressor.restore_order", False,
                           "a HiCo-trained checkpoint reads its merged tokens in the reference merge's order"))
    return out


def _trained_prompt(path: Path) -> tuple[dict[str, Any], Path] | None:
    """``model.prompt`` of the config.yaml beside an lrc checkpoint (a run dir's, an export's, or the run dir of a
    ``checkpoints/*.ckpt``), read as plain YAML; None when there is none (runs before prompt formats: chatml)."""
    from omegaconf import OmegaConf

    folder = path if path.is_dir() else (path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    found = folder / "config.yaml"
    if path.is_file() and path.suffix not in (".ckpt", ".safetensors", ".pt", ".pth", ".bin"):
        return None
    if not found.is_file():
        return None
    try:
        saved = OmegaConf.to_container(OmegaConf.load(found), resolve=False)
    except Exception:  # noqa: BLE001 - an unreadable config.yaml implies nothing; loading the weights says more
        return None
    prompt = ((saved or {}).get("model") or {}).get("prompt") if isinstance(saved, dict) else None
    return (dict(prompt), found) if isinstance(prompt, dict) and prompt.get("name") else None


def tpo_parts(path: str | Path) -> dict[str, int]:
    """Weight-name groups of InternVideo2.5's TPO parts in a checkpoint (names only: safetensors headers or
    the shard index), with their counts."""
    ckpt = open_checkpoint(path)
    found: dict[str, int] = defaultdict(int)
    for key in ckpt.first_keys(n=10**9):
        if is_tpo_key(key):
            found[key.split(".")[0]] += 1
    return dict(found)


def describe(path: str | Path) -> dict[str, Any]:
    """A ``model:`` block (encoder, projector, llm, init) that builds the architecture of the InternVL
    checkpoint at ``path``, read from its config.json alone (no weights, no code)."""
    ckpt = open_checkpoint(path)
    cfg = ckpt.config
    layout = detect_layout(ckpt)
    if not cfg or layout == "lrc":
        raise CheckpointError(f"{path}: describe reads an InternVL folder's config.json; an lrc checkpoint is described "
                              "by the config.yaml of its run dir or export")
    if layout == "internvl_hf":
        from transformers import InternVLConfig

        full = InternVLConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")})
        vision, llm = architecture(full.vision_config), architecture(full.text_config)
        # whether lm_head shares the embeddings is the top-level model's setting (the LLM inside has no head)
        llm["tie_word_embeddings"] = bool(getattr(full, "tie_word_embeddings", llm.get("tie_word_embeddings", False)))
        shuffle, layer = full.downsample_ratio, full.vision_feature_layer
    else:
        vision, llm = _vision_from_remote(cfg["vision_config"]), _llm_from_remote(cfg["llm_config"])
        shuffle, layer = cfg.get("downsample_ratio", 0.5), cfg.get("select_layer", -1)
    vision.pop("model_type", None)
    # HiCo compressors that keep the channel width fit InternVL's projector (docs/checkpoints.md); the merge
    # metric's width and order are the checkpoint's (implied_settings)
    compressor: dict[str, Any] = {"name": "tome", "clip_len": 4, "tokens_per_frame": 16}
    block: dict[str, Any] = {
        "encoder": {"name": "internvl_vit", "config": vision, "pixel_shuffle": shuffle, "select_layer": layer},
        "compressor": compressor,
        "projector": {"name": "mlp"},
        "llm": {"name": "hf_causal_lm", "config": llm},
        "init": {"path": str(path), "layout": layout},
    }
    for item in implied_settings(path, layout):
        section, _, key = item.key.partition(".")
        if key == "prompt":
            block["prompt"] = dict(item.value)
        elif key.startswith("compressor."):
            compressor[key.split(".", 1)[1]] = item.value
    parts = tpo_parts(path)
    if parts:  # InternVideo2.5's TPO heads, at the sizes its weights have (docs/checkpoints.md)
        hidden = int(llm["hidden_size"])
        heads: dict[str, Any] = {}
        if "loc_encoder" in parts or "loc_decoder" in parts or "box_token" in parts:
            heads["region"] = {"name": "region", "mlp_hidden": hidden // 2, "activation": "relu", "box_format": "xyxy"}
        if "sam" in parts or "track_embed" in parts or "track_token" in parts:
            heads["mask"] = {"name": "sam2_mask", "config": "configs/sam2/sam2_hiera_l.yaml", "adapter_hidden": hidden,
                             "checkpoint": None}
        if "temporal_token" in parts or "cg_model" in parts:
            heads["temporal"] = {"name": "cgdetr"}
        block["heads"] = heads
    return block
