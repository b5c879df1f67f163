"""The ``lrc`` command line.

    lrc plugins list [--json]
    lrc validate CONFIG [key=value ...]
    lrc fit CONFIG [--out RUN_DIR] [key=value ...]
    lrc test CONFIG --ckpt PATH [--out RUN_DIR] [key=value ...]
    lrc data synth OUT_DIR [--videos N] [--seed S]

Exit codes: 0 success, 2 bad input (config, data, checkpoint) with every problem printed, 1 anything
unexpected (with the traceback, since that is a bug to report).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _plugins_list(args: argparse.Namespace) -> int:
    from lrc.registry import REGISTRIES

    listing = {kind: reg.names() for kind, reg in REGISTRIES.items()}
    if args.json:
        print(json.dumps(listing))
    else:
        for kind, names in listing.items():
            print(f"{kind:12s} {', '.join(names) if names else '(none)'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from lrc.config import load_config, validate

    validate(load_config(args.config, args.overrides))
    print(f"{args.config}: OK")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from lrc.config import load_config
    from lrc.run import fit

    run_dir, metrics = fit(load_config(args.config, args.overrides), out=args.out)
    _report(run_dir, metrics)
    return 0


def _test(args: argparse.Namespace) -> int:
    from lrc.config import load_config
    from lrc.run import test

    run_dir, metrics = test(load_config(args.config, args.overrides), ckpt=args.ckpt, out=args.out)
    _report(run_dir, metrics)
    return 0


def _report(run_dir: Path, metrics: dict) -> None:
    print(f"\nrun dir: {run_dir}")
    for key in sorted(metrics):
        value = metrics[key]
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")
    if "val/mcq_acc" in metrics:
        print(f"\nval MCQ accuracy: {metrics['val/mcq_acc']:.3f} over {int(metrics.get('val/mcq_count', 0))} questions")


def _synth(args: argparse.Namespace) -> int:
    from lrc.data.synth import parse_tasks, synthesize

    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as exc:
        print(f"error: --tasks: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = synthesize(Path(args.out_dir), videos=args.videos, seed=args.seed, size=args.size,
                         answer_style=args.answer_style, multi_turn_train=args.multi_turn_train,
                         tasks=tasks)
    print(json.dumps(summary, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrc", description="Long and rich context video MLLMs: HiCo + TPO as plugins.")
    sub = p.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="inspect registered plugins").add_subparsers(dest="action", required=True)
    lst = plugins.add_parser("list", help="list plugin names per kind (does not import them)")
    lst.add_argument("--json", action="store_true", help='print {"compressors": [...], ...}')
    lst.set_defaults(func=_plugins_list)

    def with_config(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("config", help="experiment YAML")
        sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.compressor.tokens_per_frame=4")
        return sp

    with_config("validate", "check a config without building anything").set_defaults(func=_validate)
    fit = with_config("fit", "train, then evaluate on val")
    fit.add_argument("--out", help="run dir (must not exist or be empty); default runs/NAME/TIMESTAMP")
    fit.set_defaults(func=_fit)
    test = with_config("test", "evaluate a checkpoint on val")
    test.add_argument("--ckpt", required=True, help="checkpoint file (.ckpt / .pt / .safetensors)")
    test.add_argument("--out", help="run dir for the evaluation's outputs")
    test.set_defaults(func=_test)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="action", required=True)
    synth = data.add_parser("synth", help="write the synthetic video corpus (real MP4 files + JSONL)")
    synth.add_argument("out_dir")
    synth.add_argument("--videos", type=int, default=60)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=64, help="frame side in pixels")
    synth.add_argument("--answer-style", choices=("letter", "text"), default="letter",
                       help="answer MCQs with the option letter (benchmark style) or the option text")
    synth.add_argument("--multi-turn-train", action="store_true",
                       help="write each training video as one conversation with all its questions")
    synth.add_argument("--tasks", default="mcq",
                       help="comma-separated tasks to write: mcq,temporal,region,mask,preference (docs/data.md)")
    synth.set_defaults(func=_synth)
    return p


def main(argv: list[str] | None = None) -> int:
    from lrc.checkpoints import CheckpointError
    from lrc.config import ConfigError
    from lrc.data.annotations import AnnotationError
    from lrc.registry import PluginError
    from lrc.run import RunDirError

    p = parser()
    # Overrides may come before or after options (`lrc fit exp.yaml --out d a=b`): argparse stops
    # the positional list at the first option, so the rest arrive as "unknown" and are re-joined here.
    args, extra = p.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        p.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    # lrc's own messages; Lightning configures its own logger, so the root logger is left alone
    # (configuring it too would print every Lightning line twice).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("lrc", "lrc_plugins"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (PluginError, AnnotationError, CheckpointError, RunDirError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
