"""`listings train`, the run itself: data → corpus → linear part → fine-tuning → fusion → artifact → report.

Everything the report says about "the model" is measured on the test split through the served code
(`classifier.py`, the engine the version will serve by default), next to the TF-IDF + LinearSVC baseline fitted on
the same training rows and scored on the same test rows in the same run.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training import artifact, corpus, dataset, fusion, linear, serving, tags
from training.config import SERVING_DIR, TrainingSettings

DEFAULTS = {"epochs": 8, "batch_size": 32, "seed": 13, "tags_per_epoch": 4000, "description_chars": 400}
MAX_LEN = {"title": 40, "description": 96}  # tokens: titles only / with descriptions
QUICK = {"epochs": 1, "train_rows": 3000, "eval_rows": 600, "tags_per_epoch": 1000}
DEPTH_THRESHOLD = 0.5


@dataclass(frozen=True)
class DataSpec:
    """Which files and columns the classifier learns from (default: Flipkart categories + Myntra tags)."""

    categories: dataset.Source
    tags: dataset.Source | None = None
    extra: tuple[dataset.Source, ...] = ()

    def files(self) -> list[Path]:
        return [s.path for s in (self.categories, self.tags, *self.extra) if s is not None]

    def as_dict(self) -> dict:
        def src(s: dataset.Source | None) -> dict | None:
            return None if s is None else {"path": str(s.path), "columns": asdict(s.columns)}

        return {"categories": src(self.categories), "tags": src(self.tags), "extra": [src(s) for s in self.extra]}


def default_data(data_dir: Path) -> DataSpec:
    """The example catalogue: Flipkart's first three category levels; Myntra's clean columns as tags."""
    return DataSpec(
        categories=dataset.Source(
            Path(data_dir) / "flipkart_20k.csv",
            # 256 of the 20,000 rows have no l3 category: dropped (counted in the report's data.read)
            dataset.Columns(
                title="product_name", category="l3", separator=">", brand="brand", skip_blank_category=True
            ),
        ),
        tags=dataset.Source(
            Path(data_dir) / "myntra_styles_44k.csv",
            dataset.Columns(
                title="productDisplayName",
                category=None,
                tag_groups=(("gender", "gender"), ("colour", "baseColour"), ("season", "season"), ("usage", "usage")),
            ),
        ),
    )


@dataclass(frozen=True)
class TrainOptions:
    """What defines a trained artifact (all of it is part of the cache key)."""

    data: DataSpec
    quick: bool = False
    epochs: int = DEFAULTS["epochs"]
    max_len: int = 0  # 0: MAX_LEN by whether the data has descriptions
    batch_size: int = DEFAULTS["batch_size"]
    seed: int = DEFAULTS["seed"]
    tags_per_epoch: int = DEFAULTS["tags_per_epoch"]
    description_chars: int = DEFAULTS["description_chars"]
    device: str = "cpu"
    extra_fields: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("data", "device", "extra_fields")}
        d["data"] = self.data.as_dict()
        return d


def options(data: DataSpec, quick: bool = False, **overrides: object) -> TrainOptions:
    base: dict = dict(DEFAULTS)
    if quick:
        base.update(epochs=QUICK["epochs"], tags_per_epoch=QUICK["tags_per_epoch"])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainOptions(data=data, quick=quick, **base)


def train_or_reuse(
    settings: TrainingSettings,
    opts: TrainOptions,
    force: bool = False,
    threads: int = 2,
    echo: Callable[[str], None] = print,
) -> Path:
    """The artifact for these data, code and options: from the cache, or trained now and cached."""
    key = artifact.cache_key(opts.data.files(), opts.as_dict())
    path = artifact.cache_path(settings.cache_dir, key)
    with artifact.locked(path):
        if artifact.complete(path) and not force:
            echo(f"reusing cached model {path}")
            return path
        tmp = artifact.temporary(path)  # `locked` swept those of killed runs
        tmp.mkdir(parents=True)
        try:
            train(opts, tmp, threads, echo)
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    echo(f"cached model {path}")
    return path


def load_corpus(opts: TrainOptions) -> corpus.Corpus:
    spec = opts.data
    cat_rows, cat_read = dataset.read_counted(spec.categories, categories=True)
    tag_rows, tag_read = dataset.read_counted(spec.tags, categories=False) if spec.tags is not None else (None, None)
    extra_rows = [r for s in spec.extra for r in dataset.read(s, categories=True)]
    has_description = any(r.description for r in cat_rows[:5000])
    chars = opts.description_chars if has_description else 0
    compose = serving.classifier().compose_text

    def text(r: dataset.Row) -> str:
        return compose(r.title, r.brand, r.description, chars)

    c = corpus.build(cat_rows, tag_rows, extra_rows, text, opts.seed)
    c.stats["description_chars"] = chars
    c.stats["read"] = {"categories": cat_read, **({"tags": tag_read} if tag_read else {})}
    if opts.quick:
        rng = random.Random(opts.seed)
        for split, n in (("train", QUICK["train_rows"]), ("dev", QUICK["eval_rows"]), ("test", QUICK["eval_rows"])):
            for group in (c.categories, c.tags):
                if len(group[split]) > n:
                    group[split] = rng.sample(group[split], n)
    return c


def train(opts: TrainOptions, out: Path, threads: int = 2, echo: Callable[[str], None] = print) -> dict:
    """Train into `out` (an artifact directory) and return the report's figures."""
    import torch

    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(opts.seed)
    c = load_corpus(opts)
    tax = c.taxonomy
    chars = int(c.stats["description_chars"])
    max_len = opts.max_len or (MAX_LEN["description"] if chars else MAX_LEN["title"])
    echo(f"data: {json.dumps(c.stats)}")
    for what, counts in c.stats["read"].items():
        for reason in ("blank_title", "blank_category"):
            if counts.get(f"skipped_{reason}"):
                echo(f"{what} file: {counts[f'skipped_{reason}']} of {counts['records']} rows skipped ({reason})")
    rare = c.stats["tags_dropped_rare"]
    if rare["count"]:
        echo(
            f"{rare['count']} tags are on fewer than {rare['min_titles']} training titles and are not learned "
            f"(the most frequent: {', '.join(f'{t} ({n})' for t, n in rare['most'].items())})"
        )

    # ---------------------------------------------------------------- the linear part (and the baseline)
    train_cats = c.categories["train"]
    y_train = np.array(c.labels("train"))
    tag_index = {t: j for j, t in enumerate(c.tag_names)}
    tag_train = c.tags["train"]
    y_tag_train, _ = tags.targets(tag_train, tag_index, complete=c.same_file_tags)
    echo(
        f"fitting the linear part and the TF-IDF + LinearSVC baseline on {len(train_cats)} category and "
        f"{len(tag_train)} tag titles"
    )
    # the same training rows for the served linear part and for the baseline
    rows = (
        [e.text for e in train_cats],
        y_train.tolist(),
        len(tax.classes),
        [e.text for e in tag_train] or None,
        y_tag_train if len(tag_train) else None,
    )
    # two independent fits: liblinear releases the GIL, so in two threads they take the longer one's time instead
    # of the sum (default data, 2 cores: 62 s + 50 s one after the other, 65 s side by side). The served part's
    # tag models come after its category model: their negatives depend on where each group applies.
    with ThreadPoolExecutor(2) as pool:
        ref_job = pool.submit(linear.fit_reference, *rows)
        lin = linear.fit(*rows[:4])  # the vectorizer sees the tag titles too: serving featurizes once
        applies = tags.applicability(c, lin)
        if len(tag_train):
            linear.fit_tags(lin, *tags.linear_rows(c, applies, tag_index))
        reference = ref_job.result()

    # ---------------------------------------------------------------- fine-tuning
    from training import finetune

    network = serving.network()
    clf_mod = serving.classifier()
    enc_dir = artifact.encoder_dir()
    tok = clf_mod.Tokenizer(enc_dir, max_len)
    levels = tax.head_levels
    ancestors = [np.array(tax.ancestors(k)) for k in levels]
    level_sizes = [len(tax.level_nodes(k)) for k in levels]
    cat_ids = tok.encode([e.text for e in train_cats])
    neg_target, neg_mask = tags.category_row_negatives(c, applies, tag_index)
    cat_items = []
    for ids, e, y in zip(cat_ids, train_cats, y_train, strict=True):
        # outside a group's categories a row is its negative; in the same file, a row's own tags label it instead
        tm = neg_mask(e) if c.tag_names else None
        cat_items.append(
            finetune.Item(ids, int(y), [int(a[y]) for a in ancestors], neg_target if tm is not None else None, tm)
        )
    if c.same_file_tags and c.tag_names:  # category rows carry their own tag labels
        y_same, m_same = tags.targets(train_cats, tag_index, complete=True)
        has = np.array([bool(e.tags or e.tag_groups) for e in train_cats])
        for i, it in enumerate(cat_items):
            if has[i]:
                it.tag_target, it.tag_mask = y_same[i], m_same[i]
        tag_pool: list[finetune.Item] = []
    else:
        y_t, m_t = tags.targets(tag_train, tag_index, complete=False)
        tag_pool = [
            finetune.Item(ids, -100, [-100] * len(levels), y_t[i], m_t[i])
            for i, ids in enumerate(tok.encode([e.text for e in tag_train]))
        ]
    net = network.build(enc_dir, len(tax.classes), level_sizes, len(c.tag_names))
    finetune.init_biases(net, y_train.tolist(), y_tag_train if len(tag_train) else None)
    sample = sorted(random.Random(opts.seed).sample(range(len(cat_ids)), min(finetune.LABEL_INIT_TITLES, len(cat_ids))))
    label_init = finetune.init_label_heads(
        net,
        [(net.category, [" > ".join(p) for p in tax.classes], y_train[sample])]
        + [
            (head, [" > ".join(n) for n in tax.level_nodes(k)], a[y_train[sample]])
            for head, k, a in zip(net.levels, levels, ancestors, strict=True)
        ],
        [cat_ids[i] for i in sample],
        tok.encode,
        tok.pad_id,
    )
    echo(f"heads started from the class names: {label_init}")
    dev_cats = c.categories["dev"]
    y_dev = np.array(c.labels("dev"))
    dev_ids = tok.encode([e.text for e in dev_cats])
    echo(
        f"fine-tuning {opts.epochs} epochs on {len(cat_items)} category + {min(len(tag_pool), opts.tags_per_epoch)} "
        f"tag titles an epoch, max {max_len} tokens, {opts.device}"
    )
    fit = finetune.fit(
        net,
        cat_items,
        tag_pool,
        dev_ids,
        y_dev,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        tags_per_epoch=opts.tags_per_epoch,
        pad_id=tok.pad_id,
        seed=opts.seed,
        device=opts.device,
        echo=echo,
    )
    net = fit.net.to("cpu")

    # ---------------------------------------------------------------- fusion, calibration, thresholds (dev)
    dev_out = finetune.predict_logits(net, dev_ids, tok.pad_id, torch.device("cpu"))
    dev_lin = lin.category_scores([e.text for e in dev_cats])
    cat_params = fusion.tune_categories(dev_out[0], dev_out[2:], ancestors, dev_lin, y_dev)
    echo(f"fusion (dev): {cat_params}")
    tag_params: dict = {"beta": 1.0, "linear_temperature": 1.0, "thresholds": []}
    if c.tag_names:
        dev_tag_ex = c.tags["dev"]
        tag_dev_ids = tok.encode([e.text for e in dev_tag_ex])
        z = finetune.predict_logits(net, tag_dev_ids, tok.pad_id, torch.device("cpu"))[1]
        y_tdev, m_tdev = tags.targets(dev_tag_ex, tag_index, complete=c.same_file_tags)
        tag_params = fusion.tune_tags(
            z, lin.tag_scores([e.text for e in dev_tag_ex]), y_tdev, m_tdev, [tags.group_of(t) for t in c.tag_names]
        )

    # ---------------------------------------------------------------- the artifact (with its serving code)
    for name in artifact.SERVING_FILES:
        shutil.copy2(SERVING_DIR / name, out / name)
    torch.save(net.state_dict(), out / "weights.pt")
    (out / "encoder").mkdir()
    shutil.copy2(enc_dir / "config.json", out / "encoder" / "config.json")
    (out / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (enc_dir / name).exists():
            shutil.copy2(enc_dir / name, out / "tokenizer" / name)
    artifact.write_json(out / "labels.json", tax.to_json())
    artifact.write_json(out / "tags.json", tags.tags_json(c, applies, tag_params))
    lin_info = linear.save(lin, out / "linear.npz", [e.text for e in dev_cats])
    meta = {
        "max_len": max_len,
        "description_chars": chars,
        "default_engine": "torch",
        "fusion": {k: cat_params[k] for k in ("level_weight", "linear_temperature", "alpha", "temperature")},
        "depth_threshold": DEPTH_THRESHOLD,
        "options": opts.as_dict(),
        "data": c.stats,
        "linear": lin_info,
        "best_epoch": fit.best_epoch,
        "head_init": label_init,
    }
    artifact.write_json(out / "classifier.json", meta)

    # ---------------------------------------------------------------- engines (ONNX) and the default
    from training import engines

    meta["engines"] = engines.export_and_choose(out, dev_cats, y_dev, echo=echo)
    meta["default_engine"] = meta["engines"]["default"]
    artifact.write_json(out / "classifier.json", meta)

    # ---------------------------------------------------------------- the cascade margin (dev)
    from training import cascade

    tag_dev = None
    if c.tag_names:
        tag_dev = cascade.TagDev([e.text for e in c.tags["dev"]], y_tdev, m_tdev)
    meta["cascade"] = cascade.choose(out, meta["default_engine"], [e.text for e in dev_cats], y_dev, tag_dev, echo)
    artifact.write_json(out / "classifier.json", meta)

    # ---------------------------------------------------------------- the tag gates (dev)
    if c.tag_names:
        # what the learned rule alone gives the dev category rows as served (the cascade's rows get the linear
        # part's tags): where it leaks, the group is gated
        artifact.write_json(out / "tags.json", tags.tags_json(c, applies, tag_params, ungated=True))
        served = serving.classifier().Classifier(out)
        given = served.given_tags(served.score_texts([e.text for e in dev_cats]).tags)
        tag_params["gates"] = tags.gates([e.path[0] for e in dev_cats], given, c.tag_names, applies)
        artifact.write_json(out / "tags.json", tags.tags_json(c, applies, tag_params))
        echo(f"tag gates (dev): {tag_params['gates']}")

    # ---------------------------------------------------------------- named leaves (train finds them, dev keeps them)
    from training import named_leaves

    meta["named_leaves"] = named_leaves.choose(out, train_cats, dev_cats, echo)
    artifact.write_json(out / "classifier.json", meta)

    # ---------------------------------------------------------------- the report (test split)
    from training import report

    result = report.evaluate(out, c, lin, reference, cat_params, applies, opts, fit, ancestors, echo=echo)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    artifact.write_json(out / "metrics.json", result)
    report.plot(result, out / "report.png")
    echo(report.format_metrics(result))
    return result
