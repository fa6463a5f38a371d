"""`listings train`: fine-tune the classifier on a catalogue (or reuse the cached run), print the report next to
the baseline's, and export it as a new Triton model version.

Without `--data` it trains the example catalogue (Flipkart categories + Myntra tags from `LISTINGS_DATA_DIR`).
With `--data FILE` (CSV, JSONL or Parquet) it trains yours: name the columns with the options below."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.config import Settings
from stream.files import data_suffix, not_text
from training import dataset
from training.train import DEFAULTS, DataSpec, TrainOptions, default_data, options

MAX_POSITIONS = 512  # MiniLM-L6's max_position_embeddings
HELP = "fine-tune the classifier on a catalogue and export a new Triton model version"


def _int_from(text: str, least: int, most: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_from(text, 1)


def non_negative_int(text: str) -> int:
    return _int_from(text, 0)


def max_len(text: str) -> int:
    # the encoder's position embeddings end at 512 (a longer input was a torch size error mid-training)
    return _int_from(text, 1, MAX_POSITIONS)


def seed_value(text: str) -> int:
    # numpy's and torch's generators take a 32-bit seed (a larger one was an overflow traceback)
    return _int_from(text, 0, 2**32 - 1)


def separator(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a separator cannot be empty or blank")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data (default: the example catalogue in LISTINGS_DATA_DIR)")
    data.add_argument("--data", type=Path, help="labelled listings: CSV (or TSV), JSONL (either may be .gz) or Parquet")
    data.add_argument("--title-column", default="title")
    data.add_argument(
        "--category-column",
        action="append",
        metavar="COLUMN",
        help="the category path (any depth; default 'category'); repeat it for one column per level, top first, "
        "e.g. --category-column segment --category-column family --category-column class",
    )
    data.add_argument("--category-separator", type=separator, default=">", help="between path levels (default '>')")
    data.add_argument("--description-column", help="optional description text (used when present)")
    data.add_argument("--brand-column", help="optional brand")
    data.add_argument(
        "--tags-column", help="a list of tags (JSON list, Parquet list, or text split on --tags-separator)"
    )
    data.add_argument("--tags-separator", type=separator, default="|")
    data.add_argument(
        "--tag-group",
        action="append",
        default=[],
        metavar="GROUP=COLUMN",
        help="a column holding one value of a tag group, e.g. gender=gender (repeatable)",
    )
    data.add_argument("--split-column", help="train/dev/test per row (else a seeded split by title)")
    data.add_argument("--skip-blank-categories", action="store_true", help="drop rows whose category path is blank")
    data.add_argument(
        "--tags-data", type=Path, help="a second file with tags only (then --tags-column/--tag-group apply to it)"
    )
    data.add_argument("--tags-title-column", help="title column of --tags-data (default: --title-column)")
    data.add_argument(
        "--extra-data",
        type=Path,
        action="append",
        default=[],
        help="more labelled rows as `listings feedback export` writes them (title, category, tags); repeatable",
    )
    run_ = parser.add_argument_group("training")
    run_.add_argument("--quick", action="store_true", help="small subset, 1 epoch (tests, smoke runs)")
    run_.add_argument(
        "--epochs", type=positive_int, help=f"passes over the training split (default {DEFAULTS['epochs']})"
    )
    run_.add_argument("--max-len", type=max_len, help="tokens per listing, 1-512 (default 40; 96 with descriptions)")
    run_.add_argument("--batch-size", type=positive_int, help=f"rows per step (default {DEFAULTS['batch_size']})")
    run_.add_argument("--seed", type=seed_value, help=f"split, sampling and init seed (default {DEFAULTS['seed']})")
    run_.add_argument(
        "--tags-per-epoch",
        type=non_negative_int,
        help=f"tag-file rows mixed into each epoch (default {DEFAULTS['tags_per_epoch']})",
    )
    run_.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (a GPU when there is one)")
    run_.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    run_.add_argument("--force", action="store_true", help="retrain even when a cached artifact exists")
    out = parser.add_argument_group("export")
    out.add_argument("--no-export", action="store_true", help="train (or reuse) only; export no model version")
    out.add_argument("--output-repo", type=Path, help="model repository to export into (default: settings)")
    out.add_argument("--gpu-config", type=Path, help="also write the GPU variant of config.pbtxt to this path")


def _groups(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        group, sep, column = pair.partition("=")
        if not sep or not group.strip() or not column.strip():
            raise dataset.DataError(f"--tag-group takes GROUP=COLUMN, got {pair!r}")
        out.append((group.strip(), column.strip()))
    return tuple(out)


# the columns of `listings feedback export`, which `--extra-data` files have
EXTRA_COLUMNS = dataset.Columns(title="title", category="category", separator=">", tags="tags", tags_separator="|")


def check_files(spec: DataSpec) -> None:
    """Every data file is there and is a file: said before anything reads them (the cache key does, first)."""
    for path in spec.files():
        if not path.exists():
            raise dataset.DataError(f"{path}: no such file")
        if not path.is_file():
            raise dataset.DataError(f"{path}: not a file (a directory?)")
        if data_suffix(path) not in (".parquet", ".pq"):
            what = not_text(path)
            if what:
                raise dataset.DataError(f"{path}: {what}; give CSV, TSV, JSONL or Parquet")


def data_spec(args: argparse.Namespace, data_dir: Path) -> DataSpec:
    extra = tuple(dataset.Source(p, EXTRA_COLUMNS) for p in args.extra_data)
    if args.tags_title_column and args.tags_data is None:
        raise dataset.DataError("--tags-title-column names a column of --tags-data, and no --tags-data is given")
    if args.tags_data is not None and not (args.tags_column or args.tag_group):
        raise dataset.DataError(
            "--tags-data needs --tags-column or --tag-group: the columns of that file that hold the tags"
        )
    if args.data is None:
        default = default_data(data_dir)
        return DataSpec(default.categories, default.tags, extra)
    groups = _groups(args.tag_group)
    tags_here = args.tags_data is None
    category = args.category_column or ["category"]
    cols = dataset.Columns(
        title=args.title_column,
        category=category[0] if len(category) == 1 else None,
        category_levels=tuple(category) if len(category) > 1 else (),
        separator=args.category_separator,
        description=args.description_column,
        brand=args.brand_column,
        tags=args.tags_column if tags_here else None,
        tags_separator=args.tags_separator,
        tag_groups=groups if tags_here else (),
        split=args.split_column,
        skip_blank_category=args.skip_blank_categories,
    )
    tags_source = None
    if args.tags_data is not None:
        tags_source = dataset.Source(
            args.tags_data,
            dataset.Columns(
                title=args.tags_title_column or args.title_column,
                category=None,
                tags=args.tags_column,
                tags_separator=args.tags_separator,
                tag_groups=groups,
            ),
        )
    return DataSpec(dataset.Source(args.data, cols), tags_source, extra)


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def options_from(args: argparse.Namespace, data_dir: Path) -> TrainOptions:
    return options(
        data_spec(args, data_dir),
        args.quick,
        epochs=args.epochs,
        max_len=args.max_len,
        batch_size=args.batch_size,
        seed=args.seed,
        tags_per_epoch=args.tags_per_epoch,
        device=resolve_device(args.device),
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from stream.config import read
    from training import export, report, train
    from training.config import TrainingSettings

    ts = read(TrainingSettings)
    try:
        opts = options_from(args, ts.data_dir)
        check_files(opts.data)
        path = train.train_or_reuse(ts, opts, force=args.force, threads=args.threads)
    except dataset.DataError as exc:
        print(f"listings train: {exc}", file=sys.stderr)
        return 2
    print(report.format_metrics(json.loads((path / "metrics.json").read_text())))
    print(f"report: {path / 'metrics.json'}, {path / 'report.png'}")
    if args.gpu_config:
        export.write_gpu_config(args.gpu_config)
        print(f"wrote GPU config {args.gpu_config}")
    if args.no_export:
        return 0
    repo = args.output_repo or ts.model_repository
    version = export.export(path, repo)
    print(f"exported {repo / export.MODEL_NAME / str(version)}")
    return 0
