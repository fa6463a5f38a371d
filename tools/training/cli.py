"""`listings train`: fine-tune the classifier (or reuse the cached run), print its metrics next to the
baseline's, and export it as a new Triton model version."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream.config import Settings
from training.config import TrainingSettings
from training.train import DEFAULTS, TrainOptions, format_metrics

HELP = "fine-tune the classifier and export a new Triton model version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small subset, 1 epoch (tests, smoke runs)")
    parser.add_argument(
        "--epochs", type=int, help=f"passes over the category training split (default {DEFAULTS['epochs']})"
    )
    parser.add_argument("--max-len", type=int, help=f"tokens per title (default {DEFAULTS['max_len']})")
    parser.add_argument("--batch-size", type=int, help=f"rows per step (default {DEFAULTS['batch_size']})")
    parser.add_argument("--seed", type=int, help=f"split, sampling and init seed (default {DEFAULTS['seed']})")
    parser.add_argument(
        "--tags-per-epoch", type=int, help=f"tag rows mixed into each epoch (default {DEFAULTS['tags_per_epoch']})"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="retrain even when a cached artifact exists")
    parser.add_argument("--no-export", action="store_true", help="train (or reuse) only; export no model version")
    parser.add_argument("--output-repo", type=Path, help="model repository to export into (default: settings)")
    parser.add_argument("--gpu-config", type=Path, help="also write the GPU variant of config.pbtxt to this path")


def options_from(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions.defaults(
        args.quick,
        epochs=args.epochs,
        max_len=args.max_len,
        batch_size=args.batch_size,
        seed=args.seed,
        tags_per_epoch=args.tags_per_epoch,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training import export, train

    ts = TrainingSettings()
    path = train.train_or_reuse(ts, options_from(args), force=args.force, threads=args.threads)
    print(format_metrics(json.loads((path / "metrics.json").read_text())))
    if args.gpu_config:
        export.write_gpu_config(args.gpu_config)
        print(f"wrote GPU config {args.gpu_config}")
    if args.no_export:
        return 0
    repo = args.output_repo or ts.model_repository
    version = export.export(path, repo)
    print(f"exported {repo / export.MODEL_NAME / str(version)}")
    return 0
