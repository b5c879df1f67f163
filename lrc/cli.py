"""The ``lrc`` command line.

    lrc --version
    lrc plugins list [--json]
    lrc plugins show KIND NAME
    lrc config show CONFIG [--raw] [--json] [key=value ...]
    lrc validate CONFIG [key=value ...]
    lrc fit CONFIG [--out RUN_DIR] [key=value ...]
    lrc fit CONFIG --out RUN_DIR --resume-if-exists [key=value ...]
    lrc fit --resume RUN_DIR [trainer.key=value ...]
    lrc test CONFIG --ckpt PATH [--out RUN_DIR] [key=value ...]
    lrc ablate ABLATION [--out DIR] [--verbose] [--dry-run] [--jobs N] [--executor slurm] [key=value ...]
    lrc niah CONFIG --ckpt PATH [--out DIR] [key=value ...]
    lrc data synth OUT_DIR [--videos N] [--seed S] [--format lrc|llava|sharegpt] [--images N] [--frame-folders N]
    lrc data synth OUT_DIR --bench mvbench [--videos N] [--seed S] [--size S]
    lrc data check ANNOTATIONS... | --config CONFIG [key=value ...] [--format F] [--root DIR] [--workers N]
                   [--report FILE] [--size S] [--timeout-s T]
    lrc data convert IN OUT --to lrc|llava|sharegpt [--from F] [--root DIR] [--force]
    lrc export RUN_DIR_OR_CKPT --out DIR [--config CONFIG] [--no-hf-llm]
    lrc chat PATH --video V [--question Q] [--num-frames N] [key=value ...]
    lrc infer PATH --data ANNOTATIONS --out PRED.jsonl [--num-frames N] [key=value ...]
    lrc eval PATH --bench NAME --data DIR [--limit N] [--out DIR] [--num-frames N] [key=value ...]
    lrc checkpoint describe PATH

Exit codes: 0 success, 2 bad input (config, data, checkpoint) with every problem printed, 1 anything
unexpected (with the traceback, since that is a bug to report); a fit stopped by SIGINT or SIGTERM saves a
checkpoint and exits 130 or 143 (128 + the signal) with the command that resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from lrc.errors import Interrupted, LrcError

EXIT_BAD_INPUT = LrcError.exit_code
DEBUG_ENV = "LRC_DEBUG"  # set to 1: tracebacks for input errors too (same as --debug)


def _plugins_list(args: argparse.Namespace) -> int:
    from lrc.registry import REGISTRIES

    listing = {kind: reg.names() for kind, reg in REGISTRIES.items()}
    if args.json:
        print(json.dumps(listing))
    else:
        for kind, names in listing.items():
            print(f"{kind:12s} {', '.join(names) if names else '(none)'}")
    return 0


def _plugins_show(args: argparse.Namespace) -> int:
    from lrc.commands.introspect import show_plugin

    print(show_plugin(args.kind, args.name))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from lrc.commands.introspect import show_config

    text, problems = show_config(args.config, args.overrides, raw=args.raw, as_json=args.json)
    print(text)
    if problems:
        print(f"error: {len(problems)} config problem(s) (shown above: the merge without plugin defaults):\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _validate(args: argparse.Namespace) -> int:
    from lrc.config import load_config, validate

    validate(load_config(args.config, args.overrides))
    print(f"{args.config}: OK")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from lrc.config import load_config
    from lrc.train.run import fit, resume

    if args.resume:
        # `lrc fit --resume RUN_DIR a=b`: argparse hands the first override over as CONFIG
        if args.config is not None and "=" not in args.config:
            print(f"error: --resume takes its config from {Path(args.resume) / 'config.yaml'}; drop {args.config}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.out:
            print("error: --resume continues the run in its own dir; drop --out", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.resume_if_exists:
            print("error: --resume-if-exists goes with CONFIG --out RUN_DIR (it starts or resumes); --resume RUN_DIR "
                  "only resumes: drop one of them", file=sys.stderr)
            return EXIT_BAD_INPUT
        run_dir, metrics = resume(args.resume, ([args.config] if args.config else []) + list(args.overrides))
    elif args.config is None:
        print("error: lrc fit needs a CONFIG (or --resume RUN_DIR)", file=sys.stderr)
        return EXIT_BAD_INPUT
    else:
        run_dir, metrics = fit(load_config(args.config, args.overrides), out=args.out,
                               resume_if_exists=args.resume_if_exists)
    _report(run_dir, metrics)
    return 0


def _test(args: argparse.Namespace) -> int:
    from lrc.config import load_config
    from lrc.train.run import test

    run_dir, metrics = test(load_config(args.config, args.overrides), ckpt=args.ckpt, out=args.out)
    _report(run_dir, metrics)
    return 0


def _niah(args: argparse.Namespace) -> int:
    from lrc.config import load_config
    from lrc.commands.niah import run

    out_dir, _ = run(load_config(args.config, args.overrides), ckpt=args.ckpt, out=args.out)
    print(f"\nNIAH results: {out_dir / 'niah.json'}, {out_dir / 'metrics.json'}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from lrc.commands.ablate import ablate

    return ablate(args.ablation, out=args.out, overrides=args.overrides, verbose=args.verbose, dry_run=args.dry_run,
                  jobs=args.jobs, executor=args.executor, progress_every=args.progress_every)


def _report(run_dir: Path, metrics: dict) -> None:
    from lrc.parallel.distributed import is_launch_rank_zero

    if not is_launch_rank_zero():  # every rank of a multi-process fit ends here; one report is enough
        return
    print(f"\nrun dir: {run_dir}")
    for key in sorted(metrics):
        value = metrics[key]
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")
    if "val/mcq_acc" in metrics:
        print(f"\nval MCQ accuracy: {metrics['val/mcq_acc']:.3f} over {int(metrics.get('val/mcq_count', 0))} questions")


def _synth(args: argparse.Namespace) -> int:
    from lrc.data.synth import parse_tasks, synthesize

    if args.bench:  # a small benchmark in MVBench's layout instead of a training corpus (docs/evaluation.md)
        from lrc.data.synth.bench import synthesize_mvbench

        print(json.dumps(synthesize_mvbench(Path(args.out_dir), videos=args.videos, seed=args.seed, size=args.size),
                         indent=2))
        return 0
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as exc:
        print(f"error: --tasks: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = synthesize(Path(args.out_dir), videos=args.videos, seed=args.seed, size=args.size,
                         answer_style=args.answer_style, multi_turn_train=args.multi_turn_train,
                         tasks=tasks, format=args.format, images=args.images, frame_folders=args.frame_folders,
                         progress=False if args.no_progress else None)
    print(json.dumps(summary, indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    from lrc.data.check import check_annotations, check_sources
    from lrc.files import write_json

    common = dict(size=args.size, timeout_s=args.timeout_s, workers=args.workers,
                  progress=False if args.no_progress else None, frame_folder_fps=args.frame_folder_fps)
    if args.config:
        from lrc.config import load_config, validate
        from lrc.data.mixture import source_problems, sources_of

        # with --config, the positional arguments are key=value overrides of the config
        cfg = validate(load_config(args.config, [*args.annotations, *getattr(args, "overrides", [])]))
        d = cfg["data"]
        problems = source_problems(d["train"], d["root"], "train") + source_problems(d["val"], d["root"], "val")
        if problems:
            print("error: the data sources cannot be read:\n  " + "\n  ".join(problems), file=sys.stderr)
            return EXIT_BAD_INPUT
        common.update(timeout_s=d["read_timeout_s"], frame_folder_fps=d["frame_folder_fps"])
        sources = sources_of(d["train"], d["root"], "train") + sources_of(d["val"], d["root"], "val")
        result = check_sources(sources, seed=cfg["run"]["seed"], **common)
    elif not args.annotations:
        print("error: lrc data check needs annotation files (or --config CONFIG)", file=sys.stderr)
        return EXIT_BAD_INPUT
    else:
        result = check_annotations(args.annotations, format=args.format, root=args.root, **common)
    print(result.summary())
    if args.report:
        write_json(Path(args.report), result.report())
        print(f"report: {args.report}")
    elif result.skipped:
        print("(pass --report FILE to save the summary as JSON; its `bad` list has the format of a run's skipped.json)")
    return EXIT_BAD_INPUT if result.skipped else 0


def _convert(args: argparse.Namespace) -> int:
    from lrc.data.formats import convert

    done = convert(args.input, args.output, to=args.to, from_format=args.from_format, root=args.root, force=args.force)
    print(f"{done['records']} records: {args.input} ({done['from']}) -> {done['out']} ({done['to']}); media not copied, "
          "their paths resolve from the new file's folder")
    return 0


def _export(args: argparse.Namespace) -> int:
    from lrc.commands.export import export

    out = export(args.source, args.out, config=args.config, hf_llm=not args.no_hf_llm)
    print(f"exported to {out} (see {out / 'README.md'})")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from lrc.commands.chat import run

    return run(args.path, args.video, args.question, num_frames=args.num_frames, max_new_tokens=args.max_new_tokens,
               masks=args.masks, sample=args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
               device=args.device, dtype=args.dtype, overrides=args.overrides)


def _infer(args: argparse.Namespace) -> int:
    from lrc.commands.infer import run

    return run(args.path, args.data, args.out, num_frames=args.num_frames, max_new_tokens=args.max_new_tokens,
               limit=args.limit, restart=args.restart, progress=not args.no_progress, device=args.device,
               dtype=args.dtype, overrides=args.overrides)


def _eval(args: argparse.Namespace) -> int:
    from lrc.commands.eval import run

    return run(args.path, args.bench, args.data, out=args.out, limit=args.limit, num_frames=args.num_frames,
               sampler=args.sampler, subtitles=args.subtitles, max_new_tokens=args.max_new_tokens, ckpt=args.ckpt,
               restart=args.restart, progress=not args.no_progress, device=args.device, dtype=args.dtype,
               overrides=args.overrides)


def _describe(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from lrc.weights.pretrained import describe

    print(f"# the model block for {args.path}: paste it into an experiment (docs/checkpoints.md)")
    print(OmegaConf.to_yaml(OmegaConf.create({"model": describe(args.path)})), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    from lrc.config.schema import (ANNOTATION_FORMATS, ANSWER_STYLES, BENCHMARKS, EVAL_SAMPLERS,  # shared with the
                                   SOURCE_FORMATS, SYNTH_TASKS, DataConfig)  # config

    p = argparse.ArgumentParser(prog="lrc", description="Long and rich context video MLLMs: HiCo + TPO as plugins.")
    p.add_argument("--debug", action="store_true",
                   help=f"show the traceback of input errors too (or set {DEBUG_ENV}=1)")
    from lrc import DISTRIBUTION, __version__

    p.add_argument("--version", action="version", version=f"lrc {__version__} (package {DISTRIBUTION}, Python "
                                                          f"{sys.version.split()[0]})")
    sub = p.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="inspect registered plugins").add_subparsers(dest="action", required=True)
    lst = plugins.add_parser("list", help="list plugin names per kind (does not import them)")
    lst.add_argument("--json", action="store_true", help='print {"compressors": [...], ...}')
    lst.set_defaults(func=_plugins_list)
    show = plugins.add_parser("show", help="a plugin's arguments: types, ranges, defaults and documentation "
                                           "(imports that one plugin's module)")
    show.add_argument("kind", help="encoders, compressors, projectors, llms, heads, samplers, prompts")
    show.add_argument("name", help="its registered name, e.g. tome")
    show.set_defaults(func=_plugins_show)

    config = sub.add_parser("config", help="inspect configs").add_subparsers(dest="action", required=True)
    cshow = config.add_parser("show", help="print the resolved config with the file (or command line) that set "
                                           "each value")
    cshow.add_argument("config", help="experiment YAML")
    cshow.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.compressor.name=pooling")
    cshow.add_argument("--raw", action="store_true", help="the merge of defaults, files and command line only: no "
                                                          "validation, no plugin defaults (imports no plugin)")
    cshow.add_argument("--json", action="store_true", help='print {"key": {"value": ..., "source": ...}} per value')
    cshow.set_defaults(func=_config_show)

    def with_config(name: str, help: str, optional: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("config", help="experiment YAML", nargs="?" if optional else None)
        sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.compressor.tokens_per_frame=4")
        return sp

    with_config("validate", "check a config without building anything").set_defaults(func=_validate)
    fit = with_config("fit", "train, then evaluate on val", optional=True)
    fit.add_argument("--out", help="run dir (must not exist, be empty, or hold a run that saved no checkpoint); "
                                   "default runs/NAME/TIMESTAMP")
    fit.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run in RUN_DIR from its last.ckpt, at the batch it stopped at "
                          "(config from RUN_DIR/config.yaml; only trainer.*, run.on_nan, data.num_workers "
                          "may be overridden)")
    fit.add_argument("--resume-if-exists", action="store_true",
                     help="with --out RUN_DIR: start the run when RUN_DIR is empty, resume it when RUN_DIR holds the "
                          "same config (one command line for a job that may be requeued; docs/distributed.md)")
    fit.set_defaults(func=_fit)
    test = with_config("test", "evaluate a checkpoint on val")
    test.add_argument("--ckpt", required=True, help="checkpoint file (.ckpt / .pt / .safetensors)")
    test.add_argument("--out", help="run dir for the evaluation's outputs")
    test.set_defaults(func=_test)
    niah = with_config("niah", "needle-in-a-haystack evaluation of a checkpoint: accuracy per frame count x depth, "
                               "heatmaps, frames reached without running out of memory (docs/niah.md)")
    niah.add_argument("--ckpt", required=True, help="checkpoint file (.ckpt / .pt / .safetensors)")
    niah.add_argument("--out", help="folder for niah.json, metrics.json and the heatmaps (must not exist or be "
                                    "empty); default runs/NAME/TIMESTAMP")
    niah.set_defaults(func=_niah)

    abl = sub.add_parser("ablate", help="run a study: one fit per cell of a grid, then a results table "
                                        "(Markdown, CSV) and plots (docs/ablations.md)")
    abl.add_argument("ablation", help="ablation YAML (an `ablation:` mapping: base, grid or cells, seeds, metrics)")
    abl.add_argument("overrides", nargs="*", help="key=value overrides for every cell, e.g. trainer.max_epochs=1")
    abl.add_argument("--out", help="results folder; default runs/ablations/NAME. Re-running into it resumes")
    abl.add_argument("--verbose", action="store_true", help="stream each cell's output (always kept in its log.txt)")
    abl.add_argument("--dry-run", action="store_true", help="validate every cell and print its lrc fit command; "
                                                             "run nothing")
    abl.add_argument("--jobs", type=int, metavar="N", help="cells run at once: as child processes (default 1), each "
                                                           "with CPUs // N threads; as cluster jobs (default: all)")
    abl.add_argument("--executor", choices=("subprocess", "slurm", "local"), default="subprocess",
                     help="subprocess: child processes of lrc ablate (default); slurm: one cluster job per cell through "
                          "submitit, its settings from the ablation file's executor.slurm block; local: submitit's "
                          "local executor (the same path without a cluster)")
    abl.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                     help="seconds between progress lines while cells run (default %(default)s; 0: none)")
    abl.set_defaults(func=_ablate)

    exp = sub.add_parser("export", help="write a trained model as a self-contained folder (safetensors, config, "
                                        "tokenizer, transformers LLM folder, manifest)")
    exp.add_argument("source", help="a run dir (its config.yaml and checkpoints/last.ckpt) or a checkpoint file")
    exp.add_argument("--out", required=True, help="export folder (must not exist or be empty)")
    exp.add_argument("--config", help="the experiment the checkpoint was trained with (default: the run dir's)")
    exp.add_argument("--no-hf-llm", action="store_true", help="skip the transformers folder of the LLM (DIR/llm)")
    exp.set_defaults(func=_export)
    def inference(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("path", help="a run dir, an `lrc export` folder, or an InternVL2.5 / InternVideo2.5 folder")
        sp.add_argument("overrides", nargs="*", help="key=value config changes, e.g. data.sampler.num_frames=32")
        sp.add_argument("--num-frames", type=int, help="sample this many frames uniformly (best a multiple of the "
                                                       "compressor's clip_len) instead of the config's sampler")
        sp.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:1 ...")
        sp.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="weights' dtype (default: as built)")
        return sp

    chat = inference("chat", "ask a video questions (a REPL without --question); prints spans and boxes, writes "
                             "mask PNGs (docs/inference.md)")
    chat.add_argument("--video", required=True, help="a video file")
    chat.add_argument("--question", help="ask this once and exit (default: read questions from stdin)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--masks", default="lrc-chat-masks", help="folder for mask PNGs (default %(default)s/turnN)")
    chat.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    chat.add_argument("--temperature", type=float, default=1.0)
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int, help="seed for --sample")
    chat.set_defaults(func=_chat)
    inf = inference("infer", "answer every record of an annotation file into a JSONL of predictions (resumable)")
    inf.add_argument("--data", required=True, help="annotation JSONL (docs/data.md)")
    inf.add_argument("--out", required=True, help="predictions JSONL; re-running with it resumes")
    inf.add_argument("--max-new-tokens", type=int, default=64)
    inf.add_argument("--limit", type=int, help="answer at most this many more records")
    inf.add_argument("--restart", action="store_true", help="start OUT over instead of resuming it")
    inf.add_argument("--no-progress", action="store_true", help="no progress bar")
    inf.set_defaults(func=_infer)
    ev = inference("eval", "score a model on a standard video benchmark (MVBench, Video-MME, LongVideoBench, MLVU, "
                           "Charades-STA): results.json, a table and a plot; resumable (docs/evaluation.md)")
    ev.add_argument("--bench", choices=BENCHMARKS, help="the benchmark (default: every one of the model config's "
                                                        "eval.benches)")
    ev.add_argument("--data", help="the benchmark's folder, in its published layout (docs/evaluation.md)")
    ev.add_argument("--out", help="results folder; re-running into it resumes (default: RUN_DIR/eval/NAME for a run "
                                  "dir, else runs/eval/PATH_NAME/NAME)")
    ev.add_argument("--limit", type=int, help="at most N items, drawn in turn from each category")
    ev.add_argument("--sampler", choices=EVAL_SAMPLERS, default="uniform",
                    help="uniform: the benchmark's reference frame count (or --num-frames); config: the model's own "
                         "data.sampler (key=value overrides change it)")
    ev.add_argument("--subtitles", action="store_true", help="videomme: with subtitles")
    ev.add_argument("--max-new-tokens", type=int, help="default: the benchmark's reference limit")
    ev.add_argument("--ckpt", help="a weights file; PATH is then the config it was trained with (what eval.after_fit "
                                   "runs)")
    ev.add_argument("--restart", action="store_true", help="start OUT over instead of resuming it")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    ev.set_defaults(func=_eval)

    ckpt = sub.add_parser("checkpoint", help="checkpoint tools").add_subparsers(dest="action", required=True)
    desc = ckpt.add_parser("describe", help="print the model block that builds an InternVL checkpoint's architecture "
                                            "(reads its config.json only)")
    desc.add_argument("path", help="a transformers InternVL folder or an original InternVL2.5 / InternVideo2.5 folder")
    desc.set_defaults(func=_describe)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="action", required=True)
    synth = data.add_parser("synth", help="write the synthetic video corpus (real MP4 files + JSONL)")
    synth.add_argument("out_dir")
    synth.add_argument("--videos", type=int, default=60)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=64, help="frame side in pixels")
    synth.add_argument("--answer-style", choices=ANSWER_STYLES, default=DataConfig.synth_answer_style,
                       help="answer MCQs with the option letter (benchmark style) or the option text")
    synth.add_argument("--multi-turn-train", action="store_true",
                       help="write each training video as one conversation with all its questions")
    synth.add_argument("--tasks", default=",".join(DataConfig().synth_tasks),
                       help=f"comma-separated tasks to write: {','.join(SYNTH_TASKS)} (docs/data.md)")
    synth.add_argument("--format", choices=ANNOTATION_FORMATS, default="lrc",
                       help="annotation format: lrc (train.jsonl), llava (train.json, a JSON array with <image> "
                            "placeholders) or sharegpt (train.jsonl with messages)")
    synth.add_argument("--images", type=int, default=0,
                       help="also write N still images with questions (single- and two-image records) to "
                            "train_images / val_images")
    synth.add_argument("--frame-folders", type=int, default=0,
                       help="write N of the videos as folders of PNG frames (with their fps) instead of MP4")
    synth.add_argument("--bench", choices=("mvbench",),
                       help="write a small benchmark in MVBench's layout (json/, video/; 4 questions per video) for "
                            "`lrc eval --bench mvbench` instead of a training corpus (uses --videos, --seed, --size)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    synth.set_defaults(func=_synth)
    check = data.add_parser("check", help="decode every record's video and image (a video's first/middle/last frame) "
                                          "without training, in parallel; a summary; exit 2 when any cannot be read")
    check.add_argument("annotations", nargs="*", help="annotation file(s) in any format (lrc, llava, sharegpt); with "
                                                      "--config: key=value overrides")
    check.add_argument("--config", help="check the experiment's data.train and data.val (a file or a mixture of "
                                        "sources) as a run reads them")
    check.add_argument("--format", choices=SOURCE_FORMATS, default="auto", help="the files' format (default: detected)")
    check.add_argument("--root", help="folder relative media paths resolve against (default: each file's folder)")
    check.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="processes that decode in parallel (default %(default)s)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    check.add_argument("--frame-folder-fps", type=float, default=DataConfig.frame_folder_fps,
                       help="frame rate of a frame folder whose record gives none (data.frame_folder_fps)")
    check.add_argument("--report", help="write the summary as JSON; its `bad` list is [{id, video, reason}] "
                                        "(skipped.json format)")
    check.add_argument("--size", type=int, default=None,
                       help="decode at this frame side, as training does (default: native size)")
    check.add_argument("--timeout-s", type=float, default=DataConfig.read_timeout_s,
                       help="give up on a video open/read after this many seconds (data.read_timeout_s, "
                            "default %(default)s)")
    check.set_defaults(func=_check)
    conv = data.add_parser("convert", help="rewrite an annotation file in another format (media are not copied)")
    conv.add_argument("input", help="annotation file (lrc, llava or sharegpt; detected unless --from)")
    conv.add_argument("output", help="the new file (.json: a JSON array, .jsonl: JSON lines)")
    conv.add_argument("--to", required=True, choices=ANNOTATION_FORMATS, help="the output's format")
    conv.add_argument("--from", dest="from_format", choices=SOURCE_FORMATS, default="auto",
                      help="the input's format (default: detected)")
    conv.add_argument("--root", help="folder the input's relative media paths resolve against (default: its folder)")
    conv.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    conv.set_defaults(func=_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    from lrc.cpus import prefer_passive_waits

    prefer_passive_waits()  # before torch is imported: OpenMP threads sleep, not spin, while waiting (lrc/cpus.py)
    p = parser()
    # Overrides may come before or after options (`lrc fit exp.yaml --out d a=b`): argparse stops
    # the positional list at the first option, so the rest arrive as "unknown" and are re-joined here.
    args, extra = p.parse_known_args(argv)
    if "--debug" in extra:  # accepted anywhere on the line, not only before the command
        args.debug = True
        extra = [a for a in extra if a != "--debug"]
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        p.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    # lrc's own messages; Lightning configures its own logger, so the root logger is left alone
    # (configuring it too would print every Lightning line twice).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.lrc_cli = True  # type: ignore[attr-defined]
    for name in ("lrc", "lrc_plugins"):
        logger = logging.getLogger(name)
        # one handler, on today's stderr: a process that calls main() again (tests, a notebook) keeps no
        # handler of an earlier call, whose stream may be closed by now
        for old in [h for h in logger.handlers if getattr(h, "lrc_cli", False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    # The one handler: what the user can fix is an LrcError (lrc/errors.py), shown without a traceback
    # unless asked for; anything else is a bug in lrc or a plugin and keeps its traceback.
    try:
        return args.func(args)
    except LrcError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        if not debug and exc.__cause__ is not None:  # it wraps another error, whose traceback may help
            print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
