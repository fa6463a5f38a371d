"""`listings train`: fine-tune MiniLM-L6 with a category head and a tag head, score it next to the
TF-IDF + LinearSVC baseline on the dev split, and export a new Triton model version.

torch and transformers are imported inside functions so `listings --help` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from training import artifact, metrics, serving
from training import data as data_mod
from training.config import TrainingSettings

DEFAULTS = {"epochs": 10, "max_len": 40, "batch_size": 32, "seed": 13, "tags_per_epoch": 2000}
QUICK = {"epochs": 1, "category_rows": 3000, "tags_per_epoch": 1000, "dev_rows": 800, "calib_rows": 500}
LR_ENCODER = 2e-4
LR_HEADS = 3e-3
TAG_LOSS_WEIGHT = 0.5


@dataclass(frozen=True)
class TrainOptions:
    """What defines a trained artifact (all of it is part of the cache key)."""

    quick: bool = False
    epochs: int = DEFAULTS["epochs"]
    max_len: int = DEFAULTS["max_len"]
    batch_size: int = DEFAULTS["batch_size"]
    seed: int = DEFAULTS["seed"]
    tags_per_epoch: int = DEFAULTS["tags_per_epoch"]

    @classmethod
    def defaults(cls, quick: bool = False, **overrides: int | None) -> TrainOptions:
        base = {**DEFAULTS, **({"epochs": QUICK["epochs"], "tags_per_epoch": QUICK["tags_per_epoch"]} if quick else {})}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(quick=quick, **base)

    def as_dict(self) -> dict:
        return asdict(self)


def train_or_reuse(
    settings: TrainingSettings,
    options: TrainOptions,
    force: bool = False,
    threads: int = 2,
    echo: Callable[[str], None] = print,
) -> Path:
    """The artifact for these data, code and options: from the cache, or trained now and cached."""
    key = artifact.cache_key(settings.data_dir, options.as_dict())
    path = artifact.cache_path(settings.cache_dir, key)
    with artifact.locked(path):
        if artifact.complete(path) and not force:
            echo(f"reusing cached model {path}")
            return path
        tmp = path.with_name(f"{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            train(settings.data_dir, options.as_dict(), tmp, threads, echo)
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    echo(f"cached model {path}")
    return path


def _batches(items: list, batch_size: int, rng: random.Random) -> list[list]:
    """Shuffle, sort by length inside windows of 50 batches (little padding), shuffle the batches."""
    items = items[:]
    rng.shuffle(items)
    window = batch_size * 50
    batches = []
    for start in range(0, len(items), window):
        chunk = sorted(items[start : start + window], key=lambda it: len(it[0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _leaf_accuracy(net, ids: list[list[int]], labels: list[int], pad: int, batch: int = 128) -> float:
    """Dev leaf accuracy of the network being trained (progress report only: nothing is selected on it)."""
    import torch

    net.eval()
    hits = 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            input_ids, mask = serving.network().pad_batch([ids[i] for i in rows], pad)
            pred = net(input_ids, mask)[0].argmax(-1).tolist()
            hits += sum(int(p == labels[i]) for p, i in zip(pred, rows, strict=True))
    net.train()
    return hits / max(1, len(ids))


def _init_biases(net, cat_labels: list[int], tag_labels: list[list[int]]) -> None:
    """Start both heads at the label priors (log frequencies), so early steps learn text, not base rates."""
    import torch

    with torch.no_grad():
        cat_counts = torch.bincount(torch.tensor(cat_labels), minlength=net.category.out_features).float() + 1.0
        net.category.bias.copy_(torch.log(cat_counts / cat_counts.sum()))
        pos = torch.tensor(metrics.multi_hot(tag_labels, net.tags.out_features).sum(0), dtype=torch.float) + 1.0
        prior = pos / (len(tag_labels) + 2.0)
        net.tags.bias.copy_(torch.log(prior / (1 - prior)))


def train(data_dir: Path, options: dict, out: Path, threads: int = 2, echo: Callable[[str], None] = print) -> dict:
    """Train into `out` (an artifact directory) and return its metrics."""
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from training import baseline

    network = serving.network()

    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    seed = options["seed"]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    prep = data_mod.prepare(data_dir, seed)
    train_cats = prep.categories["train"]
    dev_cats, calib_tags, dev_tags = prep.categories["dev"], prep.tags["calib"], prep.tags["dev"]
    if options["quick"]:
        train_cats = rng.sample(train_cats, min(QUICK["category_rows"], len(train_cats)))
        dev_cats = rng.sample(dev_cats, min(QUICK["dev_rows"], len(dev_cats)))
        dev_tags = rng.sample(dev_tags, min(QUICK["dev_rows"], len(dev_tags)))
        calib_tags = rng.sample(calib_tags, min(QUICK["calib_rows"], len(calib_tags)))
    n_cat, n_tag = len(prep.taxonomy.classes), len(prep.tag_names)
    echo(f"data: {json.dumps(prep.stats())}; training on {len(train_cats)} category titles")

    enc_dir = artifact.encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(enc_dir))
    max_len = options["max_len"]

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]

    cat_items = [
        (ids, e.label, None) for ids, e in zip(tokenize([e.text for e in train_cats]), train_cats, strict=True)
    ]
    tag_pool = prep.tags["train"]
    net = network.build(enc_dir, n_cat, n_tag)
    _init_biases(net, [it[1] for it in cat_items], [e.labels for e in tag_pool])
    # word embeddings train too (brand- and product-specific tokens decide many leaves), at the encoder's rate
    heads = list(net.category.parameters()) + list(net.tags.parameters())
    enc_params = [p for p in net.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": enc_params, "lr": LR_ENCODER}, {"params": heads, "lr": LR_HEADS}], weight_decay=0.01
    )
    per_epoch = math.ceil((len(cat_items) + options["tags_per_epoch"]) / options["batch_size"])
    total = per_epoch * options["epochs"]
    warmup = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    pad = tokenizer.pad_token_id or 0
    used_tags: dict[str, data_mod.TagExample] = {}
    dev_ids = tokenize([e.text for e in dev_cats])
    t_train = time.perf_counter()
    net.train()
    for epoch in range(options["epochs"]):
        sampled = rng.sample(tag_pool, min(options["tags_per_epoch"], len(tag_pool)))
        used_tags.update((e.key, e) for e in sampled)
        tag_items = [(ids, -100, e.labels) for ids, e in zip(tokenize([e.text for e in sampled]), sampled, strict=True)]
        bar = tqdm(
            _batches(cat_items + tag_items, options["batch_size"], rng),
            desc=f"epoch {epoch + 1}/{options['epochs']}",
            unit="batch",
            mininterval=2.0,
        )
        for batch in bar:
            input_ids, mask = network.pad_batch([it[0] for it in batch], pad)
            tag_target = torch.zeros((len(batch), n_tag))
            tag_rows = torch.zeros(len(batch), dtype=torch.bool)
            for i, (_, _, tag_labels) in enumerate(batch):
                if tag_labels is not None:
                    tag_rows[i] = True
                    tag_target[i, tag_labels] = 1.0
            cat_target = torch.tensor([it[1] for it in batch])
            cat_logits, tag_logits = net(input_ids, mask)
            loss = torch.zeros(())
            if (cat_target >= 0).any():
                loss = loss + F.cross_entropy(cat_logits, cat_target, ignore_index=-100)
            if tag_rows.any():
                bce = F.binary_cross_entropy_with_logits(tag_logits[tag_rows], tag_target[tag_rows], reduction="sum")
                loss = loss + TAG_LOSS_WEIGHT * bce / int(tag_rows.sum())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        acc = _leaf_accuracy(net, dev_ids, [e.label for e in dev_cats], pad)
        echo(f"epoch {epoch + 1}: dev leaf accuracy {acc:.4f} ({time.perf_counter() - t_train:.0f}s)")
    train_seconds = time.perf_counter() - t_train

    # the artifact, then score it through the same Predictor the Triton model uses
    net.eval()
    torch.save(net.state_dict(), out / "weights.pt")
    (out / "encoder").mkdir()
    shutil.copy2(enc_dir / "config.json", out / "encoder" / "config.json")
    tokenizer.save_pretrained(str(out / "tokenizer"))
    artifact.write_json(out / "labels.json", prep.taxonomy.to_json())
    artifact.write_json(out / "tags.json", {"tags": prep.tag_names, "thresholds": [0.5] * n_tag})
    artifact.write_json(out / "meta.json", {"max_len": max_len, "options": options, "data": prep.stats()})
    predictor = network.Predictor(out)
    calib_probs = predictor.predict_texts([e.text for e in calib_tags])[1]
    thresholds = metrics.tune_thresholds(calib_probs, metrics.multi_hot([e.labels for e in calib_tags], n_tag))
    artifact.write_json(out / "tags.json", {"tags": prep.tag_names, "thresholds": thresholds})

    t_eval = time.perf_counter()
    cat_probs = predictor.predict_texts([e.text for e in dev_cats])[0]
    tag_probs = predictor.predict_texts([e.text for e in dev_tags])[1]
    ours = metrics.category_metrics(
        [e.label for e in dev_cats], [int(i) for i in cat_probs.argmax(1)], prep.taxonomy.classes
    )
    y_tag_pred = (tag_probs >= [thresholds]).astype("int8")
    ours.update(metrics.tag_metrics(metrics.multi_hot([e.labels for e in dev_tags], n_tag), y_tag_pred))
    ours["train_seconds"] = round(train_seconds, 1)
    ours["eval_rows_per_second"] = round((len(dev_cats) + len(dev_tags)) / (time.perf_counter() - t_eval), 1)
    dev_prep = data_mod.Prepared(prep.taxonomy, prep.tag_names, {"dev": dev_cats}, {"dev": dev_tags})
    base = baseline.run(dev_prep, train_cats, list(used_tags.values()))
    result = {
        "transformer": ours,
        "baseline_tfidf_linearsvc": base,
        "dev": {"category_titles": len(dev_cats), "tag_titles": len(dev_tags)},
        "train": {"category_titles": len(train_cats), "tag_titles": len(used_tags)},
        "options": options,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    artifact.write_json(out / "metrics.json", result)
    echo(format_metrics(result))
    return result


def format_metrics(result: dict) -> str:
    ours, base = result["transformer"], result["baseline_tfidf_linearsvc"]
    names = ["accuracy_l1", "accuracy_l2", "accuracy_leaf", "macro_f1", "weighted_f1", "tag_micro_f1", "tag_macro_f1"]
    lines = [f"dev split: {result['dev']['category_titles']} category titles, {result['dev']['tag_titles']} tag titles"]
    lines.append(f"{'metric':<16}{'MiniLM-L6':>12}{'TF-IDF+SVC':>12}")
    lines += [f"{n:<16}{ours[n]:>12.4f}{base[n]:>12.4f}" for n in names]
    margin = ours["accuracy_leaf"] - base["accuracy_leaf"]
    verdict = "beats" if margin > 0 else "does NOT beat"
    lines.append(f"MiniLM-L6 {verdict} the baseline on leaf accuracy ({margin * 100:+.2f} points)")
    lines.append(f"train {ours['train_seconds']:.0f}s, whole run {result['total_seconds']:.0f}s")
    return "\n".join(lines)
