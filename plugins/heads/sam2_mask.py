"""TPO mask head: the LLM's ``<track>`` hidden state prompts SAM2, which segments and tracks the object.

InternVideo2.5 (paper §3.2, "TPO"; eq. 3) attaches vision experts to the LLM through task tokens. For
tracking/segmentation the expert is SAM2 (Ravi et al. 2024), frozen in TPO, and the glue is small:

* Adapter. A two-layer MLP maps the last-layer hidden state at ``<track>`` ([N, D]) to SAM2's sparse
  prompt embedding for one box: [N, 3, 256] = top-left corner token, bottom-right corner token and
  SAM2's padding ("not a point") token — exactly what SAM2's prompt encoder produces when the video
  predictor is given a box. A second MLP predicts the box itself, [N, 4] normalised xyxy.
* Training (frame 0 of the sampled frames, where the prompt is given). TPO's terms: L1 between the
  predicted sparse embedding and SAM2's own prompt-encoder embedding of the ground-truth box
  (``prompt``), L1 between predicted and ground-truth box (``box``). TPO keeps a Dice/IoU mask loss
  but leaves it unused; here it is used by default: SAM2's image encoder reads frame 0, SAM2's mask
  decoder decodes masks from the *predicted* sparse embedding (+ SAM2's "no mask" dense embedding),
  and Dice + BCE (+ optional focal, SAM2's own training loss) compare the logits, upsampled to the
  target size, with the ground-truth mask. Gradients reach ``task_hidden`` through the frozen decoder.
  A sample whose object is not visible at frame 0 has no box to prompt with and is left out of every
  term (the terms are means over the samples that are visible at frame 0).
* Inference (``decode``). SAM2's video predictor (``SAM2VideoPredictor``) gets the predicted box at
  frame 0 through its public ``add_new_points_or_box`` and propagates over all sampled frames with
  its memory bank; masks come back at the frame size. The box — not the raw embedding — is what is
  fed: the predictor has no public entry for a sparse embedding, and the embedding is trained to
  equal SAM2's embedding of a box anyway (TPO prompts SAM2 with 1024 px frames at frame 0 likewise).

Two options replace pieces of this for a SAM2 that is not a trained video segmenter (the CPU demo's
random-init SAM2, whose memory attention and memory encoder nothing here trains):

* ``box_source="frames"``: the box comes from a :class:`~lrc_plugins.heads.region_grounding.FrameLocator`
  — the ``<track>`` hidden state queries a small conv map of each sampled frame (attention supervised on
  the gold box centre's cell, as in ``region_grounding``), giving one box per frame — and SAM2's sparse
  prompt is SAM2's own embedding of that box, so training decodes exactly what inference prompts with.
  The LLM still says *which* object (the hidden state is the query); the locator says *where*.
* ``propagation="per_frame"`` (needs ``box_source="frames"``): instead of SAM2's memory bank, every
  sampled frame is decoded as a conditioning frame with its own located box ("tracking by detection"),
  and the mask loss covers every frame where the object is visible. With real SAM2 weights keep
  ``propagation="video"``, SAM2's own propagation, which TPO uses.

What trains: the adapter and the box MLP (or the locator) always; with ``freeze_sam=False`` also SAM2's mask decoder
(not its IoU / object-score heads, which no loss here supervises) and the prompt encoder's "no mask"
embedding; SAM2's image encoder and memory modules never (the image encoder runs under ``no_grad``).

SAM2 is built from its hydra YAML (a config packaged with ``sam2`` such as
``configs/sam2.1/sam2.1_hiera_t.yaml``, or a local file) with random weights; ``checkpoint`` loads a
local SAM2 state dict (the released ``{"model": ...}`` ``.pt`` files, or a plain state dict /
``.safetensors``) through :func:`lrc.weights.checkpoints.load_state_dict_file`. Nothing is downloaded.
``image_size`` (SAM2 uses 1024) overrides the config's input size and the RoPE feature sizes of the
memory attention that follow from it, so tests can run SAM2 at 128 px on a CPU; weights do not
depend on it, so a 1024 px checkpoint loads at any size.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lrc.weights.checkpoints import CheckpointError, load_state_dict_file
from lrc.protocols import HeadBatch, check_head_batch
from lrc.model.masks import dice_loss, j_and_f, sigmoid_bce_loss, sigmoid_focal_loss
from lrc.errors import LrcError, not_installed, require
from lrc.constraints import LocalPath, NonNegativeFloat, NonNegativeInt, PositiveInt, Text
from lrc.ops import gelu_mlp
from lrc.registry import HEADS
from lrc_plugins.heads.region_grounding import FrameLocator

# SAM2 normalises frames with the ImageNet statistics (sam2.utils.misc.load_video_frames).
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
# SAM2's point labels for the two corners of a box (its prompt encoder's point_embeddings[2], [3]).
BOX_CORNER_LABELS = (2, 3)
# Hiera's last stage has stride 32 and SAM2's FPN adds it, upsampled ×2, onto the stride-16 level.
IMAGE_SIZE_MULTIPLE = 32
BOX_SOURCES = ("hidden", "frames")
PROPAGATIONS = ("video", "per_frame")
SAM2Config = Annotated[str, Text("a SAM2 config: its packaged name or a local YAML file")]
SAM2_NEEDED_BY = "heads plugin 'sam2_mask' (TPO's SAM2 mask head)"


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``weight`` is 1 (0 when there are none); multiplying, not
    indexing, keeps the graph connected so that every rank still backpropagates through the head."""
    return (values * weight).sum() / weight.sum().clamp(min=1)


def import_sam2() -> Any:
    """The ``sam2`` package, imported when a head is built (never when the registry is listed or this module is
    imported). It is lrc's optional ``tpo`` extra (SAM2 ships as a source distribution only); without it the
    error names the head and the install command."""
    return require("sam2", SAM2_NEEDED_BY, extra="tpo")


def packaged_config_names() -> list[str]:
    """Config names shipped inside the installed ``sam2`` package (valid values of ``config``)."""
    sam2 = import_sam2()

    root = Path(sam2.__file__).parent
    return sorted(str(p.relative_to(root)) for p in (root / "configs").rglob("*.yaml"))


def resolve_sam2_config(config: str) -> Path:
    """A local YAML path, or a config name packaged with ``sam2`` (``configs/sam2.1/sam2.1_hiera_t.yaml``)."""
    sam2 = import_sam2()

    local = Path(config).expanduser()
    if local.is_file():
        return local
    packaged = Path(sam2.__file__).parent / config
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"sam2_mask: config {config!r} is neither a file nor a config packaged with sam2. Packaged configs: "
        f"{', '.join(packaged_config_names())}."
    )


def build_sam2(
    config: str, image_size: int = 1024, checkpoint: str | None = None, fill_hole_area: int = 0,
) -> nn.Module:
    """A ``SAM2VideoPredictor`` from a SAM2 hydra YAML, random weights unless ``checkpoint`` is given.

    The YAML's ``model`` node is built by :func:`construct_sam2`, which calls only the SAM2 classes listed
    in ``SAM2_CLASSES`` (never hydra's ``instantiate``, which would call any ``_target_`` a file names:
    ``builtins.open``, ``torch.load`` of a pickle ...). No hydra composition either, so packaged and local
    files behave the same. Overrides, on top of the file:

    * ``_target_`` = ``SAM2VideoPredictor``: one module serves training (its image encoder, prompt
      encoder and mask decoder) and video propagation, so they share one set of weights;
    * ``image_size`` and the memory attention's RoPE ``feat_sizes`` (= image_size / 16);
    * the post-processing that ``sam2.build_sam.build_sam2_video_predictor`` applies by default
      (fall back to multimask output when a single mask is unstable; binarise clicked-frame masks
      before the memory encoder), except hole filling: ``fill_hole_area > 0`` calls SAM2's CUDA-only
      ``_C`` connected-components extension, which the pip wheel does not ship; without it SAM2 warns
      on every frame and skips the step, so it is off (0) unless asked for.
    """
    from omegaconf import OmegaConf

    path = resolve_sam2_config(config)
    cfg = OmegaConf.load(path)
    if OmegaConf.select(cfg, "model") is None:
        raise ValueError(f"sam2_mask: {path} has no top-level 'model' node; it is not a SAM2 model config")
    feat = image_size // 16
    overrides: dict[str, Any] = {
        "model._target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "model.image_size": image_size,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
        "model.binarize_mask_from_pts_for_mem_enc": True,
        "model.fill_hole_area": fill_hole_area,
    }
    for attn in ("self_attention", "cross_attention"):
        key = f"model.memory_attention.layer.{attn}.feat_sizes"
        if OmegaConf.select(cfg, key) is not None:
            overrides[key] = [feat, feat]
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    model = construct_sam2(OmegaConf.to_container(cfg.model, resolve=True), str(path))
    if checkpoint:
        load_sam2_checkpoint(model, checkpoint)
    return model


# Every class a SAM2 model config may name as a ``_target_``: those of sam2's packaged model configs
# (configs/sam2*/*.yaml, `model:` nodes) and the video predictor build_sam2 puts on top. Nothing else is called.
SAM2_CLASSES = frozenset({
    "sam2.modeling.sam2_base.SAM2Base",
    "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "sam2.modeling.backbones.image_encoder.ImageEncoder",
    "sam2.modeling.backbones.image_encoder.FpnNeck",
    "sam2.modeling.backbones.hieradet.Hiera",
    "sam2.modeling.position_encoding.PositionEmbeddingSine",
    "sam2.modeling.memory_attention.MemoryAttention",
    "sam2.modeling.memory_attention.MemoryAttentionLayer",
    "sam2.modeling.sam.transformer.RoPEAttention",
    "sam2.modeling.memory_encoder.MemoryEncoder",
    "sam2.modeling.memory_encoder.MaskDownSampler",
    "sam2.modeling.memory_encoder.Fuser",
    "sam2.modeling.memory_encoder.CXBlock",
})


class SAM2ConfigError(LrcError, ValueError):
    """A SAM2 YAML that names something other than SAM2's own classes (or uses hydra's call syntax)."""


def construct_sam2(node: Any, source: str, where: str = "model") -> Any:
    """Build a SAM2 config node: a mapping with ``_target_`` becomes that class called with its other keys
    (built first); other mappings and lists are walked; scalars stay. A ``_target_`` outside ``SAM2_CLASSES``
    or any other hydra directive (``_args_``, ``_partial_``, ``_call_`` ...) raises :class:`SAM2ConfigError`
    before anything is imported or called."""
    import importlib

    if isinstance(node, list):
        return [construct_sam2(v, source, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    directives = [k for k in node if isinstance(k, str) and k.startswith("_") and k.endswith("_") and k != "_target_"]
    if directives:
        raise SAM2ConfigError(f"sam2_mask: {source}: {where}.{directives[0]}: hydra directives are not supported; a "
                              "SAM2 model config holds classes (_target_) and their arguments only")
    args = {k: construct_sam2(v, source, f"{where}.{k}") for k, v in node.items() if k != "_target_"}
    if "_target_" not in node:
        return args
    target = node["_target_"]
    if target not in SAM2_CLASSES:
        raise SAM2ConfigError(
            f"sam2_mask: {source}: {where}._target_: {target!r} is not one of the SAM2 classes a model config may "
            f"name; lrc calls nothing else from a file. Allowed: {', '.join(sorted(SAM2_CLASSES))}")
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**args)


def load_sam2_checkpoint(model: nn.Module, checkpoint: str | Path) -> None:
    """Load a local SAM2 state dict (released ``{"model": sd}`` files or a plain ``sd``), strictly."""
    state = load_state_dict_file(checkpoint)
    if isinstance(state.get("model"), dict):  # the layout of Meta's released sam2*.pt files
        state = state["model"]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"sam2_mask: checkpoint {checkpoint} does not fit the SAM2 model built from the config "
            f"(is it for another size, e.g. hiera_s vs hiera_t?): {str(exc).splitlines()[0][:300]}"
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            f"sam2_mask: checkpoint {checkpoint} does not match the SAM2 config: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). Use the config "
            "that the checkpoint was trained with (sam2 vs sam2.1, and the same hiera size)."
        )


# SAM2VideoPredictor.init_state only reads frames from a JPEG folder or an MP4 path, through
# sam2.sam2_video_predictor.load_video_frames. Our frames are already tensors; swapping that one
# function for the duration of init_state lets SAM2 build its own inference state (whose layout
# differs between sam2 releases) from them. Its propagation also draws a tqdm bar per call, which
# would print one bar per evaluated sample into training logs; the same swap silences it. The lock
# keeps two threads from interleaving the swap.
_INIT_STATE_LOCK = threading.Lock()


@contextmanager
def _frames_from_memory(images: torch.Tensor, height: int, width: int) -> Iterator[None]:
    import sam2.sam2_video_predictor as video_predictor

    def load_video_frames(**_: Any) -> tuple[torch.Tensor, int, int]:
        return images, height, width

    def quiet(iterable: Any, **_: Any) -> Any:
        return iterable

    with _INIT_STATE_LOCK:
        original = video_predictor.load_video_frames, video_predictor.tqdm
        video_predictor.load_video_frames, video_predictor.tqdm = load_video_frames, quiet
        try:
            yield
        finally:
            video_predictor.load_video_frames, video_predictor.tqdm = original


@HEADS.register("sam2_mask")
class SAM2MaskHead(nn.Module):
    """``<track>`` hidden state → SAM2 box prompt → masks over the sampled frames (see the module docstring).

    ``forward(batch)`` returns ``prompt_embedding`` [N, 3, C] (C = SAM2's prompt dim, 256),
    ``box`` [N, 4] normalised xyxy (x1 ≤ x2, y1 ≤ y2) at frame 0 and ``mask_logits`` [N, K, 1, s/4, s/4],
    SAM2's low-resolution mask logits for the predicted prompt on frame 0 (K = 1) or, with
    ``propagation="per_frame"``, on every sampled frame (K = T; s = ``image_size``). With
    ``box_source="frames"`` also ``frame_boxes`` [N, T, 4] and the locator's ``attention`` [N, T, cells].
    ``loss`` returns ``prompt``, ``box``, ``dice``, ``bce``, ``focal`` (+ ``attention`` with the locator)
    and their weighted sum ``loss``.
    ``decode`` returns per sample ``{"masks": bool [T, H, W] at the frames' size (CPU), "box": [4 floats]}``.

    Args:
        config: SAM2's model config: a name packaged with ``sam2`` (``configs/sam2.1/sam2.1_hiera_t.yaml``) or a local
            YAML file.
        checkpoint: a local SAM2 checkpoint (null: random init).
        image_size: SAM2's input side in pixels (a multiple of 32).
        freeze_sam: keep all of SAM2 frozen, as TPO does (false also trains its mask decoder).
        adapter_hidden: hidden width of the adapter MLP from the ``<track>`` hidden state to SAM2's prompt.
        prompt_weight: weight of the L1 between the predicted prompt embedding and SAM2's own embedding of the gold box.
        box_weight: weight of the L1 between the predicted and the gold box.
        dice_weight: weight of the dice loss on the masks.
        bce_weight: weight of the binary cross entropy on the masks.
        focal_weight: weight of the focal loss on the masks (0: off).
        fill_hole_area: fill holes up to this many pixels in the predicted masks (needs SAM2's CUDA extension; 0:
            off).
        box_source: ``hidden``: the adapter maps the ``<track>`` hidden state to a prompt and a box (TPO);
            ``frames``: the hidden state queries a small conv map of every frame and SAM2 is prompted with the located
            box.
        propagation: ``video``: SAM2's video predictor propagates frame 0's box with its memory bank; ``per_frame``
            (needs ``box_source: frames``): every frame decoded with its own located box.
        locator_dim: width of the locator's feature map (``box_source: frames``).
        locator_image_size: frames are resized to this side for the locator (a multiple of 8).
        max_frames: most frames a sample may have (the locator's frame position table).
        attention_weight: weight of the cross entropy that puts the locator's attention on the gold centre cell.
    """

    task: ClassVar[str] = "mask"
    task_token: ClassVar[str] = "<track>"
    begin_token: ClassVar[str] = "<track_begin>"

    @staticmethod
    def check_args(args: dict[str, Any]) -> list[tuple[str, str]]:
        """``lrc validate`` reports a missing ``sam2`` before anything is built (the import itself waits for the
        build)."""
        return [("name", what) for what in not_installed("sam2", SAM2_NEEDED_BY, extra="tpo")]

    def __init__(
        self,
        hidden_size: PositiveInt,
        config: SAM2Config = "configs/sam2.1/sam2.1_hiera_t.yaml",
        checkpoint: LocalPath | None = None,
        image_size: PositiveInt = 1024,
        freeze_sam: bool = True,
        adapter_hidden: PositiveInt = 1024,
        prompt_weight: NonNegativeFloat = 1.0,
        box_weight: NonNegativeFloat = 1.0,
        dice_weight: NonNegativeFloat = 1.0,
        bce_weight: NonNegativeFloat = 1.0,
        focal_weight: NonNegativeFloat = 0.0,
        fill_hole_area: NonNegativeInt = 0,
        box_source: Literal[BOX_SOURCES] = "hidden",
        propagation: Literal[PROPAGATIONS] = "video",
        locator_dim: PositiveInt = 64,
        locator_image_size: PositiveInt = 64,
        max_frames: PositiveInt = 512,
        attention_weight: NonNegativeFloat = 1.0,
    ):
        """Argument types, ranges and choices are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        if image_size % IMAGE_SIZE_MULTIPLE:
            raise ValueError(
                f"sam2_mask: image_size {image_size} is not a multiple of {IMAGE_SIZE_MULTIPLE}; SAM2's Hiera backbone "
                f"halves the resolution five times and its FPN adds the 1/32 level onto the 1/16 level. "
                f"Use e.g. {max(IMAGE_SIZE_MULTIPLE, image_size // IMAGE_SIZE_MULTIPLE * IMAGE_SIZE_MULTIPLE)} "
                "(SAM2's own size is 1024)."
            )
        if propagation == "per_frame" and box_source != "frames":
            raise ValueError("sam2_mask: propagation 'per_frame' prompts every frame with its own box, which only the "
                             "frame locator gives; set box_source: frames (or propagation: video)")
        weights = dict(prompt=prompt_weight, box=box_weight, dice=dice_weight, bce=bce_weight, focal=focal_weight,
                       attention=attention_weight)
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.freeze_sam = freeze_sam
        self.box_source, self.propagation = box_source, propagation
        self.weights = {k: float(v) for k, v in weights.items()}

        self.sam = build_sam2(config, image_size=image_size, checkpoint=checkpoint, fill_hole_area=fill_hole_area)
        self.prompt_dim = self.sam.sam_prompt_embed_dim
        # TPO freezes all of SAM2 (freeze_sam=True). With freeze_sam=False the mask decoder and the
        # prompt encoder train, but only the parameters the losses reach: the decoder without its
        # IoU and object-score heads (no loss supervises them) and the prompt encoder's "no mask"
        # embedding (the sparse prompt is the adapter's, and the box target must not move). So every
        # trainable parameter gets a gradient and DDP needs no find_unused_parameters.
        for p in self.sam.parameters():
            p.requires_grad_(False)
        if not freeze_sam:
            decoder = self.sam.sam_mask_decoder
            unsupervised = {id(p) for name in ("iou_prediction_head", "pred_obj_score_head")
                            for p in (getattr(decoder, name).parameters() if hasattr(decoder, name) else ())}
            for p in decoder.parameters():
                p.requires_grad_(id(p) not in unsupervised)
            self.sam.sam_prompt_encoder.no_mask_embed.weight.requires_grad_(True)

        if box_source == "hidden":
            # Two box-corner tokens + SAM's padding token: the sparse embedding SAM2 makes for a box.
            self.prompt_adapter = gelu_mlp(hidden_size, adapter_hidden, 3 * self.prompt_dim)
            self.box_head = gelu_mlp(hidden_size, adapter_hidden, 4)
        else:
            self.locator = FrameLocator(hidden_size, adapter_hidden, locator_dim, locator_image_size, max_frames,
                                        "sam2_mask")
        self.register_buffer("pixel_mean", torch.tensor(SAM2_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(SAM2_STD).view(1, 3, 1, 1), persistent=False)
        self.train(True)

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, image_size={self.image_size}, freeze_sam={self.freeze_sam}, "
                f"box_source={self.box_source}, propagation={self.propagation}")

    def train(self, mode: bool = True) -> "SAM2MaskHead":
        # Frozen SAM2 parts always run in eval mode (dropout off in the memory attention, SAM2's
        # inference-time mask selection); trainable ones follow the head.
        super().train(mode)
        self.sam.eval()
        if mode and not self.freeze_sam:
            self.sam.sam_prompt_encoder.train()
            self.sam.sam_mask_decoder.train()
        return self

    # -- SAM2 pieces ----------------------------------------------------------------------------
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [T, 3, H, W] RGB in [0, 1] (or uint8) → SAM2 input [T, 3, s, s]: resized, normalised."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"sam2_mask: expected frames [T, 3, H, W], got shape {tuple(frames.shape)}")
        x = frames.to(self.pixel_mean.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            # SAM2's loader squashes each frame to a square with PIL bicubic; same here.
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True).clamp(0, 1)
        return (x - self.pixel_mean) / self.pixel_std

    def box_prompt_embedding(self, boxes: torch.Tensor) -> torch.Tensor:
        """SAM2's own sparse embedding [N, 3, C] of normalised xyxy boxes [N, 4], as its video predictor makes it.

        ``add_new_points_or_box`` turns a box into two points labelled 2 and 3 in SAM2 pixel units
        (× image_size) and the prompt encoder appends its padding token: the TPO prompt target.
        """
        n = boxes.shape[0]
        coords = boxes.float().reshape(n, 2, 2) * self.image_size
        labels = torch.tensor(BOX_CORNER_LABELS, dtype=torch.int32, device=boxes.device).expand(n, 2)
        sparse, _ = self.sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        return sparse

    def decode_prompt_frame(self, frames: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """SAM2 mask logits [N, 1, s/4, s/4] for frames [N, 3, H, W] prompted by sparse embeddings [N, 3, C].

        Follows SAM2's path for an initial conditioning frame (``_track_step`` without memories):
        backbone features + no-memory embedding, high-resolution FPN levels, "no mask" dense prompt,
        one mask output (a box is two points, for which SAM2 asks for a single mask).
        """
        sam = self.sam
        n = frames.shape[0]
        images = self.preprocess(frames)
        with torch.no_grad():
            backbone_out = sam.image_encoder(images)
        fpn = list(backbone_out["backbone_fpn"])
        if sam.use_high_res_features_in_sam:
            # SAM2.forward_image projects the two high-res levels with the decoder's convs; they are
            # part of the mask decoder, so they run outside no_grad (trainable with freeze_sam=False).
            fpn[0] = sam.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = sam.sam_mask_decoder.conv_s1(fpn[1])
        _, feats, pos, sizes = sam._prepare_backbone_features({**backbone_out, "backbone_fpn": fpn})
        pix_feat = sam._prepare_memory_conditioned_features(
            frame_idx=0, is_init_cond_frame=True, current_vision_feats=feats[-1:],
            current_vision_pos_embeds=pos[-1:], feat_sizes=sizes[-1:],
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, num_frames=1,
        )
        high_res = [x.permute(1, 2, 0).reshape(n, x.shape[2], *s) for x, s in zip(feats[:-1], sizes[:-1])] or None
        dense = sam.sam_prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, *pix_feat.shape[-2:])
        low_res, _ious, _tokens, _object_scores = sam.sam_mask_decoder(
            image_embeddings=pix_feat, image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.to(pix_feat.dtype), dense_prompt_embeddings=dense,
            multimask_output=False, repeat_image=False, high_res_features=high_res,
        )
        return low_res.float()

    # -- head protocol --------------------------------------------------------------------------
    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]:
        hidden = batch.task_hidden
        n = check_head_batch("sam2_mask", batch, self.hidden_size, ("frames",))
        frames = [self._check_frames(f, i) for i, f in enumerate(batch.frames)]
        if self.box_source == "hidden":
            h = hidden.to(self.prompt_adapter[0].weight.dtype)
            prompt = self.prompt_adapter(h).view(n, 3, self.prompt_dim)
            # Two corners in [0, 1]; their per-axis min/max is a valid xyxy box whatever the MLP outputs.
            corners = self.box_head(h).sigmoid().view(n, 2, 2)
            box = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=-1)
            # The prompt is given at sampled frame 0; SAM2 decodes it there (the mask loss's input).
            mask_logits = self.decode_prompt_frame(torch.stack([f[0] for f in frames]), prompt)
            return {"prompt_embedding": prompt, "box": box, "mask_logits": mask_logits[:, None]}

        boxes, scores = self.locator(hidden, frames, per_frame=True)  # N × [T_i, 4], N × [T_i, h·w]
        frame_boxes = torch.nn.utils.rnn.pad_sequence(boxes, batch_first=True)  # [N, T, 4]
        attention = torch.nn.utils.rnn.pad_sequence(scores, batch_first=True)  # [N, T, h·w]
        # which frames SAM2 decodes: the prompt frame (video propagation) or every frame (per_frame)
        decoded = 1 if self.propagation == "video" else frame_boxes.shape[1]
        pairs = [(i, t) for i in range(n) for t in range(min(decoded, frames[i].shape[0]))]
        sparse = self.box_prompt_embedding(torch.stack([frame_boxes[i, t] for i, t in pairs]))
        logits = self.decode_prompt_frame(torch.stack([frames[i][t] for i, t in pairs]), sparse)
        mask_logits = logits.new_zeros(n, decoded, *logits.shape[1:])
        for k, (i, t) in enumerate(pairs):
            mask_logits[i, t] = logits[k]
        prompt = torch.stack([sparse[pairs.index((i, 0))] for i in range(n)])
        return {"prompt_embedding": prompt, "box": frame_boxes[:, 0], "mask_logits": mask_logits,
                "frame_boxes": frame_boxes, "attention": attention}

    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        prompt, box, logits = predictions["prompt_embedding"], predictions["box"], predictions["mask_logits"]
        n = box.shape[0]
        if len(batch.targets) != n:
            raise ValueError(
                f"sam2_mask: loss needs one target per sample, got {len(batch.targets)} targets for {n} samples "
                f"(ids {batch.ids[:5]})"
            )
        device = box.device
        gt_boxes = torch.stack([self._target(t, "boxes", i, batch)[0] for i, t in enumerate(batch.targets)])
        gt_boxes = gt_boxes.to(device=device, dtype=torch.float32)
        visible = torch.tensor(
            [bool(t["visible"][0]) if "visible" in t else True for t in batch.targets], device=device,
        ).float()
        with torch.no_grad():
            prompt_target = self.box_prompt_embedding(gt_boxes)

        per_sample = {"prompt": (prompt.float() - prompt_target.float()).abs().mean(dim=(1, 2))}
        # The located boxes and the attention are supervised on every frame where the object is visible;
        # the hidden-only box on the prompt frame (TPO).
        if "frame_boxes" in predictions:
            box_l1, attention = [], []
            for i, target in enumerate(batch.targets):
                t = len(batch.frames[i])
                seen = self._visible(target, t).to(device)
                gold = self._target(target, "boxes", i, batch)[:t].to(device=device, dtype=torch.float32)
                cells = torch.tensor([self.locator.cell_of(b) for b in gold], device=device)
                l1 = (predictions["frame_boxes"][i, :t].float() - gold).abs().mean(dim=1)
                ce = F.cross_entropy(predictions["attention"][i, :t].float(), cells, reduction="none")
                box_l1.append(_masked_mean(l1, seen))
                attention.append(_masked_mean(ce, seen))
            per_sample.update(box=torch.stack(box_l1), attention=torch.stack(attention))
        else:
            per_sample["box"] = (box.float() - gt_boxes).abs().mean(dim=1)

        # Mask terms on each decoded frame where the object is visible (frame 0 with video propagation).
        dice, bce, focal = [], [], []
        for i, target in enumerate(batch.targets):
            t = min(logits.shape[1], len(batch.frames[i]))
            gt = self._target(target, "masks", i, batch)[:t].to(device)  # [t, H, W]
            x = F.interpolate(logits[i, :t], size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            seen = self._visible(target, t).to(device)
            dice.append(_masked_mean(dice_loss(x, gt, reduction="none"), seen))
            bce.append(_masked_mean(sigmoid_bce_loss(x, gt, reduction="none"), seen))
            focal.append(_masked_mean(sigmoid_focal_loss(x, gt, reduction="none"), seen))
        per_sample.update(dice=torch.stack(dice), bce=torch.stack(bce), focal=torch.stack(focal))

        # Mean over the samples with the object visible at the prompt frame — or, for terms already
        # averaged over a sample's visible frames, visible in any frame.
        per_frame_terms = ({"box", "attention"} if "frame_boxes" in predictions else set()) | \
            ({"dice", "bce", "focal"} if self.propagation == "per_frame" else set())
        seen_any = torch.stack([self._visible(t, len(batch.frames[i])).amax() for i, t in enumerate(batch.targets)])
        seen_any = seen_any.to(device)
        terms = {name: _masked_mean(values, seen_any if name in per_frame_terms else visible)
                 for name, values in per_sample.items()}
        terms["loss"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms

    @torch.no_grad()
    def decode(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> list[dict[str, Any]]:
        outputs = []
        for i, frames in enumerate(batch.frames):
            box = predictions["box"][i].detach().float().cpu()
            frames = self._check_frames(frames, i)
            if self.propagation == "per_frame":
                # every frame was decoded in forward with its own located box
                logits = predictions["mask_logits"][i, :frames.shape[0]].float()
                masks = (F.interpolate(logits, size=frames.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0)
                outputs.append({"masks": masks.cpu(), "box": box.tolist(),
                                "frame_boxes": predictions["frame_boxes"][i, :frames.shape[0]].float().cpu().tolist()})
            else:
                outputs.append({"masks": self.track(frames, box), "box": box.tolist()})
        return outputs

    @torch.no_grad()
    def track(self, frames: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """Bool masks [T, H, W] (CPU): SAM2 video propagation from a normalised xyxy box at frame 0."""
        t, h, w = frames.shape[0], frames.shape[-2], frames.shape[-1]
        images = self.preprocess(frames)
        masks = torch.zeros(t, h, w, dtype=torch.bool)
        with _frames_from_memory(images, h, w):
            state = self.sam.init_state(video_path="<in-memory frames>")
            # normalize_coords=False: the box is already in [0, 1]; SAM2 scales it by its image size.
            self.sam.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=[float(v) for v in box],
                                           normalize_coords=False)
            for frame_idx, _obj_ids, video_res_logits in self.sam.propagate_in_video(state):
                masks[frame_idx] = (video_res_logits[0, 0] > 0).cpu()
        return masks

    def metrics(self, outputs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Per-sample DAVIS J, F and J&F over the sampled frames (lrc.model.masks; no frame is skipped)."""
        if len(outputs) != len(targets):
            raise ValueError(f"sam2_mask: {len(outputs)} outputs but {len(targets)} targets")
        values: dict[str, list[float]] = {"j": [], "f": [], "jf": []}
        for i, (out, target) in enumerate(zip(outputs, targets)):
            pred = torch.as_tensor(out["masks"]).bool().cpu()
            gt = torch.as_tensor(target["masks"]).bool().cpu()
            if pred.shape[0] != gt.shape[0]:
                raise ValueError(
                    f"sam2_mask: sample {i} has {pred.shape[0]} predicted frames but {gt.shape[0]} target frames"
                )
            if pred.shape[-2:] != gt.shape[-2:]:
                # Predictions are at the model's frame size; score at the annotation's size.
                pred = F.interpolate(pred[:, None].float(), size=gt.shape[-2:], mode="nearest")[:, 0].bool()
            for name, value in j_and_f(pred, gt).items():
                values[name].append(value)
        return values

    # -- checks -----------------------------------------------------------------------------
    @staticmethod
    def _check_frames(frames: torch.Tensor, i: int) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
            raise ValueError(f"sam2_mask: frames of sample {i} must be [T >= 1, 3, H, W], got {tuple(frames.shape)}")
        return frames

    @staticmethod
    def _visible(target: dict[str, Any], t: int) -> torch.Tensor:
        """Float [t]: 1 where the object is visible in the first t sampled frames (all, when not annotated)."""
        if "visible" not in target:
            return torch.ones(t)
        return torch.as_tensor(target["visible"][:t]).float()

    @staticmethod
    def _target(target: dict[str, Any], key: str, i: int, batch: HeadBatch) -> torch.Tensor:
        if key not in target:
            sample = batch.ids[i] if i < len(batch.ids) else i
            raise KeyError(
                f"sam2_mask: target of sample {sample!r} has no {key!r} (has {sorted(target)}); mask targets need "
                "'masks' bool [T, H, W], 'boxes' float [T, 4] normalised xyxy and 'visible' bool [T]"
            )
        return torch.as_tensor(target[key])
