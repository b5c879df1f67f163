"""Any transformers causal LM (Qwen2, Llama, InternLM2 ...) as the language model."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import logging
import re
from types import MethodType, SimpleNamespace
from typing import Annotated, Any, Literal

import torch
from torch import nn

from lrc.config.schema import ATTENTION_IMPLEMENTATIONS
from lrc.constraints import LocalPath, NonNegativeInt, PositiveInt, Range, check_value
from lrc.registry import LLMS
from lrc.weights.checkpoints import CheckpointError

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")  # the torch dtype the weights are created or loaded in
# transformers config arguments that are sizes or counts (hidden_size, num_attention_heads, head_dim ...)
SIZE_NAME = re.compile(r"^num_|_size$|_dim$|_embeddings$")


def resolve_attn_implementation(requested: str) -> str:
    """flash-attn only where it can run (CUDA and the package present); otherwise SDPA, said aloud."""
    if requested in ("flash_attention_2", "flash_attention_3"):
        has_pkg = importlib.util.find_spec("flash_attn") is not None
        if not (has_pkg and torch.cuda.is_available()):
            log.warning("attn_implementation=%s asked for but %s; using sdpa instead", requested,
                        "no CUDA device is available" if has_pkg else "the flash-attn package is not installed "
                        "(pip install 'lrc[gpu]')")
            return "sdpa"
    return requested


def wrap_lora(model: nn.Module, lora: dict[str, Any], new_token_ids: tuple[int, ...] = ()) -> nn.Module:
    """peft LoRA on the LLM (TPO stage 2/3 train the LLM through LoRA; paper §3.5).

    ``lora`` holds ``peft.LoraConfig`` arguments (``r``, ``lora_alpha``, ``lora_dropout``,
    ``target_modules`` ...); the base weights are frozen. The embedding rows of ``new_token_ids`` (the
    tokens lrc added for the TPO heads) stay trainable through peft's ``trainable_token_indices``, in the
    input embeddings and, when not tied to them, the output layer: the LLM must learn to *emit* the
    routing tokens, which frozen random rows would leave to the adapters alone. Setting
    ``trainable_token_indices`` (or ``modules_to_save``) in ``lora`` yourself replaces that."""
    from peft import LoraConfig, get_peft_model

    args = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear", **lora}
    if new_token_ids and "trainable_token_indices" not in args and not args.get("modules_to_save"):
        ids = sorted(set(int(i) for i in new_token_ids))
        if getattr(model.config, "tie_word_embeddings", False):
            args["trainable_token_indices"] = ids  # the output layer shares the rows
        else:
            names = {id(module): name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
            args["trainable_token_indices"] = {names[id(model.get_input_embeddings())]: ids,
                                               names[id(model.get_output_embeddings())]: ids}
    try:
        config = LoraConfig(task_type="CAUSAL_LM", **args)
    except TypeError as exc:
        raise ValueError(f"model.llm.lora: {exc}. Use peft.LoraConfig's argument names (r, lora_alpha, "
                         "lora_dropout, target_modules, modules_to_save ...)") from exc
    return get_peft_model(model, config)


def chunk_mlps(model: nn.Module, positions: int | None) -> int:
    """Run each decoder layer's MLP over the sequence ``positions`` at a time whenever no gradient is recorded
    (evaluation, generation's prefill); returns how many MLPs were set.

    Why. A decoder layer's MLP holds act(gate), up and their product, 3 x L x intermediate values, at once:
    for a 7B-class LLM (intermediate 14,336, 3.5x the hidden size) on a long video that transient is the
    largest tensor of the forward, and it comes in the first layers, before HiCo's token dropout has removed
    anything (benchmarks/frames_under_memory_cap.py, docs/benchmarks.md section 3). The MLP acts on each
    position alone, so pieces of the sequence give exactly the same output; only the transient shrinks to
    that of ``positions``. With gradients the pieces' activations would all be saved for the backward
    pass, so training runs the MLP whole (activation checkpointing is its memory lever).

    The MLP keeps its own class and parameter names (checkpoints and LoRA see no change): only its
    ``forward`` is replaced on the instance, as a method bound to it, so a deep copy (DPO's frozen
    reference) binds to the copy."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if positions is None or layers is None:
        return 0
    count = 0
    for layer in layers:
        mlp = getattr(layer, "mlp", None)
        if isinstance(mlp, nn.Module):
            mlp.mlp_chunk_positions = positions
            mlp.forward = MethodType(_chunked_mlp_forward, mlp)
            count += 1
    return count


def _chunked_mlp_forward(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    whole = type(mlp).forward
    n = mlp.mlp_chunk_positions
    if torch.is_grad_enabled() or x.dim() < 2 or x.shape[-2] <= n:
        return whole(mlp, x)
    first = whole(mlp, x[..., :n, :])
    out = first.new_empty(*x.shape[:-1], first.shape[-1])  # written piece by piece: no concatenated copy
    out[..., :n, :] = first
    del first
    for start in range(n, x.shape[-2], n):
        out[..., start:start + n, :] = whole(mlp, x[..., start:start + n, :])
    return out


def config_key_problems(config_class: Any, config: dict[str, Any]) -> list[tuple[str, str]]:
    """``(config.<key>, what)`` for keys of ``config`` that ``config_class`` (a transformers config class)
    does not know: neither its arguments, nor its or PretrainedConfig's default keys, nor an alias it maps
    onto one of those (``rope_theta`` -> ``rope_parameters``, ``torch_dtype`` -> ``dtype``); and for values
    that do not fit the argument's annotation, or a size or count (``hidden_size``, ``num_attention_heads``,
    ... whose default is a whole number >= 1) below 1."""
    from transformers import PretrainedConfig

    params = inspect.signature(config_class.__init__).parameters
    known = set(params) | set(PretrainedConfig().to_dict())
    known |= set(getattr(config_class, "attribute_map", None) or {})
    try:
        known |= set(config_class().to_dict())
    except Exception:  # noqa: BLE001 - a config class without usable defaults: its signature still counts
        pass
    known -= {"self", "kwargs", "model_type"}
    problems = []
    for key, value in config.items():
        if key == "vocab_size":
            problems.append(("config.vocab_size", "set by lrc: the tokenizer's length, after the tokens lrc adds; "
                                                  "remove it"))
        elif key not in known and not _absorbed(config_class, key, value):
            close = difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            problems.append((f"config.{key}", f"{config_class.__name__} has no setting {key!r}; it would be ignored "
                                              f"and the model built with the default.{hint}"))
        elif key in params:
            annotation, default = params[key].annotation, params[key].default
            if SIZE_NAME.search(key) and check_value(default, PositiveInt) is None:
                annotation = Annotated[annotation, Range(min=1)]  # a size or count: at least 1
            problem = check_value(value, annotation)
            if problem is not None:
                problems.append((f"config.{key}", problem))
    return problems


def _absorbed(config_class: Any, key: str, value: Any) -> bool:
    """A legacy name the config class maps onto another setting: given alone, it does not stay as itself."""
    try:
        return key not in config_class(**{key: value}).to_dict()
    except Exception:  # noqa: BLE001 - a value the class refuses: the key is still one it reads
        return True


@LLMS.register("hf_causal_lm")
class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM, random-init from ``config`` or loaded from a local ``pretrained`` path.

    ``config`` is the keyword arguments of the model's config class and must name its
    ``model_type`` (e.g. ``qwen2``, ``llama``). ``vocab_size`` comes from the builder (the tokenizer's
    length, after lrc adds its special tokens); a pretrained model's embeddings are resized to it
    when the tokenizer grew. ``trust_remote_code`` stays off unless you set it.

    Args:
        config: keyword arguments of the model's transformers config, with ``model_type`` (``qwen2``, ``llama``
            ...), for a randomly initialised model; every key must be one its config class knows (a misspelt
            ``hidden_sise`` is an error with the close match). Give this or ``pretrained``.
        pretrained: a local folder with a transformers causal LM (its config and weights); give this or ``config``.
        attn_implementation: ``sdpa``, ``eager``, ``flex_attention``, or on GPU with ``lrc[gpu]``
            ``flash_attention_2`` / ``flash_attention_3`` (falls back to SDPA with a warning when flash-attn is
            missing).
        dtype: the weights' dtype: ``float32``, ``bfloat16`` or ``float16`` (null: as built or saved).
        trust_remote_code: let transformers run the model folder's own Python code (off unless you set it).
        gradient_checkpointing: recompute the decoder layers in the backward pass (less memory, more time).
        lora: ``peft.LoraConfig`` arguments, e.g. ``{r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}``
            (defaults r 8, alpha 16, every linear layer); the base weights are frozen except the embedding rows of
            the TPO heads' tokens. Null: no LoRA.
        sequence_parallel: P > 1 splits each training sequence over groups of P ranks (Ulysses-style); attention
            heads and key/value heads must be multiples of P (docs/distributed.md).
        mlp_chunk_positions: without gradients (evaluation, generation), each decoder layer's MLP runs over this
            many positions at a time, so its transient (3 x positions x intermediate) no longer grows with a long
            video; the output is the same. Null: the whole sequence at once (``chunk_mlps``).
    """

    def __init__(
        self,
        vocab_size: PositiveInt,
        config: dict[str, Any] | None = None,
        pretrained: LocalPath | None = None,
        attn_implementation: Literal[ATTENTION_IMPLEMENTATIONS] = "sdpa",
        dtype: Literal[DTYPES] | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        lora: dict[str, Any] | None = None,
        sequence_parallel: PositiveInt = 1,
        mlp_chunk_positions: PositiveInt | None = 4096,
        new_token_ids: tuple[NonNegativeInt, ...] = (),
    ):
        """``sequence_parallel``: P > 1 splits each training sequence over groups of P ranks, Ulysses-style
        (lrc/parallel/sequence_parallel.py, docs/distributed.md); attention runs as ``ulysses_<attn_implementation>``.
        Argument types, ranges and choices are the annotations' (checked by lrc.constraints before building);
        ``check_args`` checks the keys of ``config`` against the transformers config class of its model_type."""
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        if (config is None) == (pretrained is None):
            raise ValueError(f"hf_causal_lm: give exactly one of `config` (random init) or `pretrained` (a local path), got "
                             f"{'both' if config else 'neither'}. To load weights over a base config that sets `config`, "
                             "add model.llm.config=null.")
        attn = resolve_attn_implementation(attn_implementation)
        self.sequence_parallel = sequence_parallel
        if sequence_parallel > 1:
            from lrc.parallel.sequence_parallel import register_attention

            attn = register_attention(attn)
        torch_dtype = getattr(torch, dtype) if dtype else None
        if pretrained is not None:
            try:
                self.model = AutoModelForCausalLM.from_pretrained(
                    pretrained, attn_implementation=attn, dtype=torch_dtype, trust_remote_code=trust_remote_code)
            except Exception as exc:  # noqa: BLE001 - a weights file that would run code gets lrc's own message
                if "weights_only" not in str(exc) and type(exc).__name__ != "UnpicklingError":
                    raise
                raise CheckpointError(
                    f"hf_causal_lm: refused to load the weights of {pretrained}: a pickled weights file there "
                    "(pytorch_model*.bin) holds objects other than tensors, which could run code when unpickled; lrc "
                    "never does that. Convert the weights to safetensors (model.safetensors) from a copy you trust, "
                    "or use another model folder.") from None
        else:
            config = dict(config)
            if "model_type" not in config:
                raise ValueError("hf_causal_lm: `config` must name its `model_type` (e.g. qwen2, llama)")
            hf_config = AutoConfig.for_model(config.pop("model_type"), **config, vocab_size=vocab_size)
            hf_config._attn_implementation = attn
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype)
        if self.model.get_input_embeddings().num_embeddings < vocab_size:
            self.model.resize_token_embeddings(vocab_size)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if sequence_parallel > 1:
            from lrc.parallel.sequence_parallel import check_model

            check_model(self.model.config, sequence_parallel)
        self.hidden_size = self.model.config.hidden_size
        chunk_mlps(self.model, mlp_chunk_positions)
        if lora:
            self.model = wrap_lora(self.model, lora, tuple(new_token_ids))

    @staticmethod
    def check_args(args: dict[str, Any]) -> list[tuple[str, str]]:
        """What ``lrc validate`` can say before building: not both config and pretrained, a known model_type,
        and keys of ``config`` that its config class knows.

        (Neither is left to build time: a shared base such as experiments/base.yaml names neither.)
        ``model_type`` is looked up in transformers' table of built-in config classes (no module is reached
        by a path from the config, no remote code runs). A misspelt key would otherwise become an attribute
        nobody reads while the model silently takes the default (``hidden_sise: 64`` -> Qwen2's 4096)."""
        config, pretrained = args.get("config"), args.get("pretrained")
        if config is not None and pretrained is not None:
            return [("pretrained", "give exactly one of `config` (random init) or `pretrained` (a local path), got "
                                   "both; over a base that sets `config`, add model.llm.config=null")]
        if not isinstance(config, dict):
            return []
        from transformers import CONFIG_MAPPING

        model_type = config.get("model_type")
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            return [("config.model_type", f"{model_type!r} is not a model type built into transformers (e.g. qwen2, "
                                          f"llama); custom code is never imported from a config.{hint}")]
        return config_key_problems(CONFIG_MAPPING[model_type], {k: v for k, v in config.items() if k != "model_type"})

    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any):
        if attention_mask is None and position_ids is not None and inputs_embeds.shape[0] == 1:
            # a packed row (lrc/data/packing.py): attend within each sample, not over a dense N × N mask
            from lrc.model.varlen_attention import varlen_attention

            with varlen_attention(self.model.config, position_ids):
                return self.model(inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=False, **kwargs)
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=False, **kwargs)

    def forward_sequence_parallel(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                  labels: torch.Tensor | None = None, output_hidden_states: bool = False) -> Any:
        """This rank's chunk of a sequence-parallel forward (lrc.parallel.sequence_parallel.sequence_parallel_forward)."""
        from lrc.parallel.sequence_parallel import sequence_parallel_forward, sequence_parallel_group

        return sequence_parallel_forward(self.model, inputs_embeds, sequence_parallel_group(self.sequence_parallel),
                                         labels=labels, attention_mask=attention_mask,
                                         output_hidden_states=output_hidden_states)

    def forward_with_token_dropout(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                                   visual_mask: torch.Tensor, schedule: Any, labels: torch.Tensor | None = None,
                                   training: bool = False, queries: list[list[int]] | None = None,
                                   cache: Any = None) -> Any:
        """HiCo level 2 (lrc/model/token_dropout.py): the decoder run layer by layer, dropping visual tokens
        (``queries`` and ``cache``: generation's prefill, lrc/model/generation.py)."""
        from lrc.model.token_dropout import forward_with_token_dropout

        return forward_with_token_dropout(self.model, inputs_embeds, attention_mask, visual_mask, schedule,
                                          labels=labels, training=training, queries=queries, cache=cache)

    # -- generation with a key/value cache (lrc.protocols.CachedLLM; lrc/model/generation.py) -------------
    def new_cache(self) -> Any:
        """An empty transformers key/value cache for this model."""
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self._base().config)
        except TypeError:  # older transformers
            return DynamicCache()

    def _base(self) -> Any:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward_cached(self, inputs_embeds: torch.Tensor, cache: Any = None, output_hidden_states: bool = False) -> Any:
        """New positions ``[1, L, D]`` after those in ``cache`` (None: a fresh one): ``.logits``, ``.cache`` and,
        when asked, ``.hidden_states`` (transformers' own cached forward)."""
        cache = self.new_cache() if cache is None else cache
        params = inspect.signature(self._base().forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        out = self.model(inputs_embeds=inputs_embeds, use_cache=True, output_hidden_states=output_hidden_states,
                         **{name: cache})
        return SimpleNamespace(logits=out.logits, cache=cache, hidden_states=out.hidden_states)

    def decode_with_token_dropout(self, inputs_embeds: torch.Tensor, cache: Any) -> Any:
        """One new token after a prefill that dropped visual tokens (token_dropout.decode_step)."""
        from lrc.model.token_dropout import decode_step

        return decode_step(self.model, inputs_embeds, cache)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

