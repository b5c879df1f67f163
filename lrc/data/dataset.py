"""From annotation records to padded training batches.

One sample: sampler plugin → frame indices/timestamps → decode (lrc/data/video.py: PyAV, resized while
converting; exact frames, or nearby key frames when the sampler allows, with their true indices and
timestamps) → normalised ``pixel_values [T,3,S,S]`` → prompt with the video spliced in → ids and labels.
Decoding runs in persistent DataLoader worker processes by default (``data.num_workers``, lrc/cpus.py).

A sample whose video cannot be read is not an error: ``__getitem__`` returns a *skip marker* with the
sample id and the reason; the collate function drops it from the batch and passes the marker on, so
the training module counts and reports it even when workers run in other processes.

The data module watches those markers in the main process (``on_before_batch_transfer``): it logs
each bad sample once, with its id and reason, and stops the run with ``TooManyBadSamples`` when more
than ``max_bad_fraction`` of a split's samples are bad, since a run on a mostly broken corpus is
worth nothing and would otherwise only be noticed at the end.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lrc.config.schema import DataConfig  # the defaults below are the config's
from lrc.cpus import data_workers, decode_threads
from lrc.data.annotations import Record
from lrc.data.collate import Collate
from lrc.data.media import Skipped, open_video, read_images, segment_frames
from lrc.data.paths import MediaPolicy
from lrc.data.mixture import Source, SourceCount, counts_table, load_split
from lrc.data.resumable import EpochShuffleSampler, ResumableLoader
from lrc.data.sharding import data_parallel_rank, eval_sampler
from lrc.data.tasks import task_targets
from lrc.data.prompt import PromptBuilder, PromptError
from lrc.data.video import VideoReadError, read_opened
from lrc.errors import LrcError

log = logging.getLogger(__name__)


class TooManyBadSamples(LrcError, RuntimeError):
    """More than ``data.max_bad_fraction`` of a split could not be used; the run stops.

    ``skipped`` lists every bad sample seen so far; the runner writes them to ``report``
    (RUN_DIR/skipped.json) and sets it before the error is shown, so the message can name the file.
    """

    def __init__(self, split: str, bad: int, total: int, threshold: float, skipped: list[Skipped]):
        self.split, self.bad, self.total, self.threshold = split, bad, total, threshold
        self.skipped = skipped
        self.report: Path | None = None
        super().__init__(split, bad, total, threshold)

    def __str__(self) -> str:
        where = f"listed with reasons in {self.report}" if self.report else "listed in the log above"
        return (f"{self.bad} of {self.total} {self.split} samples ({self.bad / self.total:.1%}) could not be used, "
                f"more than data.max_bad_fraction={self.threshold:g} allows; the run was stopped. They are "
                f"{where}. Fix, re-encode or remove those files (or their records in the annotations); "
                "`lrc data check ANNOTATIONS` finds every unreadable video without training. To train on the "
                "readable rest instead, raise data.max_bad_fraction.")


class VideoConversationDataset(Dataset):
    def __init__(
        self,
        records: list[Record],
        sampler: Any,
        prompts: PromptBuilder,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        max_length: int = DataConfig.max_length,
        cache_frames: bool = DataConfig.cache_frames,
        read_timeout_s: float | None = DataConfig.read_timeout_s,
        frame_folder_fps: float = DataConfig.frame_folder_fps,
        media_root: str | Path | None = None,
        allow_outside_root: bool = DataConfig.allow_outside_root,
        decode_threads: int = 1,
    ):
        """``media_root`` / ``allow_outside_root``: where a record's media may be (lrc/data/paths.py; None: anywhere).
        ``decode_threads``: the video decoder's threads per read (lrc/cpus.py)."""
        self.records = records
        self.decode_threads = decode_threads
        self.policy = MediaPolicy(media_root, allow_outside_root)
        self.read_timeout_s = read_timeout_s
        self.frame_folder_fps = frame_folder_fps
        self.sampler = sampler
        self.prompts = prompts
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.max_length = max_length
        # Decoded frames by video; only sound for deterministic samplers (same indices every epoch).
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, float, np.ndarray]] | None = {} if cache_frames else None

    def __len__(self) -> int:
        return len(self.records)

    def _frames(self, rec: Record) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """frames [T,S,S,3] uint8, timestamps [T] s, duration s, and the sampled video frame indices [T].

        An image record's frames are its images (timestamps 0, duration 0). A record's segment (``start``/
        ``end``) is sampled as a video of its own: indices count video frames, timestamps and duration the
        segment's seconds."""
        key = _media_key(rec)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        self._check_where(rec)
        if rec.images is not None:
            frames = read_images(rec.images, size=self.image_size)
            n = len(frames)
            out = (frames, np.zeros(n), 0.0, np.arange(n))
        else:
            with open_video(rec.video, size=self.image_size, timeout_s=self.read_timeout_s, fps=rec.fps,
                            frame_folder_fps=self.frame_folder_fps, threads=self.decode_threads) as video:
                lo = 0
                if rec.start is None and rec.end is None:
                    indices, timestamps = self.sampler(video.num_frames, video.fps, video.duration)
                    duration = video.duration
                else:
                    lo, hi = segment_frames(video.num_frames, video.fps, rec.start, rec.end, rec.video)
                    duration = (hi - lo) / video.fps
                    indices, timestamps = self.sampler(hi - lo, video.fps, duration)
                    indices = np.asarray(indices) + lo
                # a sampler that allows it (``exact = False``) gets nearby key frames where they are cheaper; a
                # frame read in place of a sampled one brings its own index and time (segment-relative)
                got = read_opened(video, indices, exact=getattr(self.sampler, "exact", True))
                moved = got.indices != np.asarray(indices)
                timestamps = np.where(moved, (got.indices - lo) / video.fps, np.asarray(timestamps, dtype=np.float64))
                frames, indices = got.frames, got.indices
            out = (frames, timestamps, duration, indices)
        if self._cache is not None:
            self._cache[key] = out
        return out

    def _frame_count(self, rec: Record) -> tuple[int, float]:
        """How many frames ``_frames`` gives ``rec``, and its duration, from metadata alone (no decoding)."""
        self._check_where(rec)
        if rec.images is not None:
            missing = [p for p in rec.images if not p.is_file()]
            if missing:
                raise VideoReadError(missing[0], "file not found")
            return len(rec.images), 0.0
        with open_video(rec.video, size=self.image_size, timeout_s=self.read_timeout_s, fps=rec.fps,
                        frame_folder_fps=self.frame_folder_fps, threads=self.decode_threads) as video:
            if rec.start is None and rec.end is None:
                return len(self.sampler(video.num_frames, video.fps, video.duration)[0]), video.duration
            lo, hi = segment_frames(video.num_frames, video.fps, rec.start, rec.end, rec.video)
            duration = (hi - lo) / video.fps
            return len(self.sampler(hi - lo, video.fps, duration)[0]), duration

    def _check_where(self, rec: Record) -> None:
        """The sample is skipped when one of its media lies where media may not be (lrc/data/paths.py)."""
        refused = self.policy.first_problem(rec.media)
        if refused is not None:
            raise VideoReadError(*refused)

    def _encode(self, rec: Record, duration: float, num_frames: int) -> Any:
        """The prompt of ``rec``: its video at ``<video>``, or its images at their ``<image>`` placeholders."""
        if rec.images is not None:
            return self.prompts.encode_conversation(rec.conversations, None, num_frames, sample_id=rec.id, images=True)
        return self.prompts.encode_conversation(rec.conversations, duration, num_frames, sample_id=rec.id)

    def num_tokens(self, i: int) -> int:
        """Sample i's sequence length as ``__getitem__`` will build it, from the video's metadata alone (no
        frame is decoded): text plus one slot per visual token, i.e. frames × the compressor's tokens per
        frame, after HiCo compression (lrc/data/prompt.py). 0 for a sample ``__getitem__`` will skip (unreadable
        video, bad prompt, longer than ``max_length``). Packing plans with it (lrc/data/packing.py)."""
        rec = self.records[i]
        try:
            key = _media_key(rec)
            if self._cache is not None and key in self._cache:
                _, timestamps, duration, _ = self._cache[key]
                num_frames = len(timestamps)
            else:
                num_frames, duration = self._frame_count(rec)
            n = len(self._encode(rec, duration, num_frames).input_ids)
        except (VideoReadError, PromptError):
            return 0
        return n if n <= self.max_length else 0

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        try:
            frames, timestamps, duration, indices = self._frames(rec)
        except VideoReadError as exc:
            # logged once per sample by VideoDataModule (main process); here only at debug level
            log.debug("skipping sample %s (%s): %s", rec.id, rec.media_label, exc.reason)
            return {"skipped": Skipped(rec.id, rec.media_label, exc.reason)}
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
        pixels = (pixels - self.mean) / self.std
        try:
            enc = self._encode(rec, duration, len(frames))
        except PromptError as exc:
            return {"skipped": Skipped(rec.id, rec.media_label, str(exc))}
        if len(enc.input_ids) > self.max_length:
            reason = (f"sequence of {len(enc.input_ids)} tokens exceeds data.max_length={self.max_length}; "
                      "sample fewer frames, use fewer tokens per frame or raise max_length")
            return {"skipped": Skipped(rec.id, rec.media_label, reason)}
        item: dict[str, Any] = {
            "id": rec.id,
            "pixel_values": pixels,
            "timestamps": torch.as_tensor(timestamps, dtype=torch.float32),
            "input_ids": torch.tensor(enc.input_ids),
            "labels": torch.tensor(enc.labels),
            "answer_start": enc.answer_start,
            "question_type": rec.question_type or rec.task,
            "query_positions": enc.query_positions,
            "media": "image" if rec.images is not None else "video",
        }
        rejected = getattr(rec, "rejected", None) or rec.extra.get("rejected")
        if rejected is not None:
            # a preference pair (DPO): the same prompt with the losing answer; only the final
            # answers are scored
            try:
                worse = self.prompts.encode_rejected(rec.conversations, rejected, None if rec.images is not None
                                                     else duration, len(frames), sample_id=rec.id,
                                                     **({"images": True} if rec.images is not None else {}))
            except PromptError as exc:
                return {"skipped": Skipped(rec.id, rec.media_label, str(exc))}
            item["chosen_labels"] = torch.tensor(self.prompts.last_turn_only(enc).labels)
            item["rejected_input_ids"] = torch.tensor(worse.input_ids)
            item["rejected_labels"] = torch.tensor(worse.labels)
        # TPO head targets (lrc/protocols.py) from the record and the frames actually sampled
        try:
            targets = task_targets(rec, indices, timestamps, duration, frame_size=tuple(frames.shape[1:3]))
        except ValueError as exc:
            log.debug("skipping sample %s (%s): %s", rec.id, rec.media_label, exc)
            return {"skipped": Skipped(rec.id, rec.media_label, str(exc))}
        if "input_boxes" in targets:  # boxes fed into the prompt at <region>, not a head target
            item["input_boxes"] = targets.pop("input_boxes")
        item["task"] = rec.task
        item["targets"] = targets
        item["duration"] = float(duration)
        if rec.task == "mcq" and rec.options:
            try:
                item["option_ids"] = self.prompts.option_ids(rec.options)
            except PromptError as exc:
                return {"skipped": Skipped(rec.id, rec.media_label, str(exc))}
            item["answer_index"] = rec.options.index(rec.answer)
        return item


def pool_across_ranks(trainer: Any, found: list[Skipped]) -> list[Skipped]:
    """Every rank's ``found``, on every rank (one all-reduce of a count; the lists only when one is not empty).
    All ranks must call it together."""
    import torch.distributed as dist

    count = torch.tensor([len(found)], device=trainer.strategy.root_device)
    dist.all_reduce(count)
    if int(count.item()) == 0:
        return found
    shards: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(shards, found)
    return [s for shard in shards for s in shard]


class VideoDataModule(L.LightningDataModule):
    """Train/val loaders over JSONL annotations; everything it needs is built by lrc.train.build."""

    def __init__(
        self,
        train_file: str | Sequence[Source],
        val_file: str | Sequence[Source],
        sampler: Any,
        prompts: PromptBuilder,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int = DataConfig.batch_size,
        eval_batch_size: int | None = None,
        num_workers: int | None = DataConfig.num_workers,
        max_length: int = DataConfig.max_length,
        cache_frames: bool = DataConfig.cache_frames,
        pad_id: int = 0,
        tasks: Sequence[str] | None = None,
        seed: int = 0,
        read_timeout_s: float | None = DataConfig.read_timeout_s,
        max_bad_fraction: float = DataConfig.max_bad_fraction,
        packing: dict[str, int] | None = None,
        sequence_parallel: int = 1,
        frame_folder_fps: float = DataConfig.frame_folder_fps,
        media_root: str | Path | None = None,
        allow_outside_root: bool = DataConfig.allow_outside_root,
        threads: int | None = None,
    ):
        """``threads``: run.threads; with ``num_workers`` (None: from the threads) it decides the loaders' worker
        processes and the decoder's threads (lrc/cpus.py). ``media_root`` / ``allow_outside_root``: where a record's
        media may be (data.root, data.allow_outside_root; lrc/data/paths.py). ``tasks``: use only records whose ``task`` is listed (None: all), so one corpus serves
        studies with and without TPO's task data. ``seed``: the train order of epoch e is a function
        of (seed, e), so an interrupted run resumes mid-epoch exactly (lrc/data/resumable.py).
        ``read_timeout_s``: per video open/read (lrc/data/video.py). ``max_bad_fraction``: stop with
        ``TooManyBadSamples`` when more than this fraction of a split's samples are bad (0: at the first).
        ``packing``: ``{max_tokens, lookahead}`` to pack training samples into rows of at most max_tokens
        tokens instead of padded batches of ``batch_size`` (lrc/data/packing.py); None: no packing.
        Validation batches stay padded. ``sequence_parallel``: ranks that share one training sequence
        (model.llm.sequence_parallel, lrc/parallel/sequence_parallel.py); the train order is sharded over groups
        of that many ranks, so every rank of a group gets the same batches. ``train_file`` / ``val_file``: an
        annotation file (any format, detected) or a mixture, a list of :class:`lrc.data.mixture.Source`
        (read, sampled with ``seed`` and repeated as lrc/data/mixture.py says). ``frame_folder_fps``: the frame
        rate of a folder of frames whose record gives none (lrc/data/media.py)."""
        super().__init__()
        self.sequence_parallel = sequence_parallel
        self.packing = dict(packing) if packing else None
        self._train_lengths: list[int] | None = None
        self.seed = seed
        self._position: dict[str, int] | None = None  # a resumed run's train position (state_dict below)
        self.files = {"train": train_file, "val": val_file}
        self.counts: dict[str, list[SourceCount]] = {}  # per split: what each source contributed
        self.tasks = set(tasks) if tasks is not None else None
        self.num_workers = data_workers(num_workers, threads)
        self.common = dict(sampler=sampler, prompts=prompts, image_size=image_size, mean=mean, std=std,
                           max_length=max_length, cache_frames=cache_frames, read_timeout_s=read_timeout_s,
                           frame_folder_fps=frame_folder_fps, media_root=media_root,
                           allow_outside_root=allow_outside_root,
                           decode_threads=decode_threads(self.num_workers, threads))
        self.max_bad_fraction = max_bad_fraction
        self.bad: dict[str, dict[str, Skipped]] = {"train": {}, "val": {}}  # split -> id -> first marker
        self.seen: dict[str, int] = {"train": 0, "val": 0}  # samples delivered, bad ones included
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.collate = Collate(pad_id)
        self.datasets: dict[str, VideoConversationDataset] = {}

    def dataset(self, split: str) -> VideoConversationDataset:
        if split not in self.datasets:
            spec = self.files[split]
            sources = list(spec) if isinstance(spec, (list, tuple)) else [Source(f"data.{split}", Path(spec))]
            records, self.counts[split] = load_split(sources, seed=self.seed)
            log.info("%s", counts_table(split, self.counts[split]))
            if self.tasks is not None:
                records = [r for r in records if r.task in self.tasks]
                if not records:
                    where = ", ".join(str(s.annotations) for s in sources)
                    raise ValueError(f"data.tasks={sorted(self.tasks)} keeps no record of {where}; "
                                     "list tasks that the corpus has (docs/data.md)")
            self.datasets[split] = VideoConversationDataset(records, **self.common)
        return self.datasets[split]

    def source_counts(self) -> dict[str, list[dict[str, Any]]]:
        """Per split read so far, what each source contributed (RUN_DIR/data_sources.json)."""
        from dataclasses import asdict

        return {split: [asdict(c) for c in counts] for split, counts in self.counts.items()}

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the batch's skip markers against the split (main process, so worker processes are
        covered) and stop the run when too many distinct samples are bad."""
        trainer = getattr(self, "trainer", None)
        split = "train" if trainer is not None and trainer.training else "val"
        found = list(batch.get("skipped", [])) if isinstance(batch, dict) else []
        if split == "train" and trainer is not None and trainer.world_size > 1:
            # Under DDP every rank takes each training step, so every rank passes here once per step: the ranks
            # pool the bad samples they found, and the limit is judged on the whole split's count, not one shard's
            found = pool_across_ranks(trainer, found)
        elif not isinstance(batch, dict) or "skipped" not in batch:
            return batch
        if isinstance(batch, dict) and "size" in batch:
            self.seen[split] += batch["size"] + len(batch.get("skipped", []))
        self.count_bad(split, found)
        return batch

    def count_bad(self, split: str, found: Sequence[Skipped]) -> None:
        """Add ``found`` to the split's distinct bad samples (each logged once) and stop the run with
        :class:`TooManyBadSamples` when more than ``max_bad_fraction`` of the split is bad. Distinct bad samples
        over the split's size, not over the samples seen so far: the first bad sample of an epoch should not
        stop a run that allows 5 %. Validation shards may differ in length between ranks (no per-batch
        agreement is possible there): each rank counts its own against the whole split while validating, and
        the module pools every rank's at the end of the validation epoch (lrc/train/module.py)."""
        bad = self.bad[split]
        total = len(self.dataset(split))
        for s in found:
            if s.id in bad:
                continue
            bad[s.id] = s
            log.warning("skipping %s sample %s (%s): %s [%d bad of %d seen, %d in the split]",
                        split, s.id, s.video, s.reason, len(bad), self.seen[split], total)
        if total and len(bad) / total > self.max_bad_fraction:
            skipped = [s for b in self.bad.values() for s in b.values()]
            raise TooManyBadSamples(split, len(bad), total, self.max_bad_fraction, skipped)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        self.dataset("val")

    def _loader(self, split: str, shuffle: bool, batch_size: int, sampler: Any = None) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          collate_fn=self.collate, **self.workers())

    def workers(self) -> dict[str, Any]:
        """The DataLoader arguments for this module's worker processes (persistent, see ``start_worker``)."""
        if self.num_workers == 0:
            return {"num_workers": 0}
        return {"num_workers": self.num_workers, "persistent_workers": True, "worker_init_fn": start_worker}

    def train_lengths(self) -> list[int]:
        """Every train sample's token count (``num_tokens``), measured once, for the packing plan."""
        if self._train_lengths is None:
            dataset, began = self.dataset("train"), time.perf_counter()
            self._train_lengths = [dataset.num_tokens(i) for i in range(len(dataset))]
            log.info("packing: measured the token counts of %d train samples in %.1f s", len(dataset),
                     time.perf_counter() - began)
        return self._train_lengths

    def train_dataloader(self) -> DataLoader:
        workers = self.workers()
        dataset = self.dataset("train")
        if self.packing is not None:
            from lrc.data.packing import PackedLoader

            loader: ResumableLoader = PackedLoader(dataset, self.train_lengths(), seed=self.seed,
                                                   pad_id=self.collate.pad_id, ids=[r.id for r in dataset.records],
                                                   **self.packing, **workers)
        else:
            replica, replicas = data_parallel_rank(self.sequence_parallel)
            loader = ResumableLoader(dataset, batch_size=self.batch_size, seed=self.seed, collate_fn=self.collate,
                                     order=EpochShuffleSampler(len(dataset), self.seed, replicas, replica), **workers)
        if self._position is not None:
            loader.load_state_dict(self._position)
            self._position = None
        self._train_loader = loader
        return loader

    # The train data position travels in the checkpoint through these hooks, which Lightning restores
    # before it first builds the train loader. (The loader is "stateful" for Lightning too, but Lightning
    # builds it early to size the LR schedule and then skips handing it its state.)
    def state_dict(self) -> dict[str, Any]:
        loader = getattr(self, "_train_loader", None)
        return {"train_position": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._position = state.get("train_position")

    def val_dataloader(self) -> DataLoader:
        # under several ranks, each evaluates its own shard; lrc/train/module.py gathers the results
        sampler = eval_sampler(len(self.dataset("val")), getattr(self, "trainer", None))
        return self._loader("val", False, self.eval_batch_size, sampler=sampler)


def start_worker(worker_id: int) -> None:
    """A DataLoader worker's start: its own process group and the default signal handlers, then Lightning's
    per-worker seeding (which Lightning adds itself only to loaders without a ``worker_init_fn``).

    Why: Ctrl-C in a terminal, and a kill of the run's process group, signal every process of the group. The
    training process turns SIGINT/SIGTERM into a checkpoint and a clean stop (lrc/train/interrupt.py), then
    shuts its workers down; a worker started without lrc's handler (spawn, forkserver) would die of the same
    signal at once, and the training process would fail on the lost worker instead of saving, while a forked
    worker would run a copy of that handler that no one reads. In a group of its own a worker gets only signals
    sent to it (the loader's shutdown, a cgroup-wide kill), and those act as they normally do."""
    import signal

    from lightning.fabric.utilities.seed import pl_worker_init_function

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.setpgrp()
    except OSError:  # not permitted here (some sandboxes): the worker stays in the run's group
        pass
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)


def _media_key(rec: Record) -> str:
    """What a record's decoded frames depend on: its media and segment (the frame cache's key)."""
    if rec.start is None and rec.end is None:
        return rec.media_label
    return f"{rec.media_label}|{rec.start}|{rec.end}"
