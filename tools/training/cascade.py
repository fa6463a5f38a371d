"""The cascade margin of a version, chosen on the dev split (see `classifier.py`, 7).

Rows whose linear category scores put one class far ahead of the rest skip the encoder. The fusion weighs the
linear term at a high temperature, so on such rows the encoder almost never changes the answer; skipping it
there is where most of the serving time goes.

The margin is chosen on the deterministic reference engine, PyTorch fp32: with and without the cascade the rows
it keeps on the encoder get bit-for-bit the same scores, so every difference is the cascade's own. (The int8
engine quantizes activations per batch: removing the easy rows changes the batches and flips a few unsure rows
either way, 0.1-0.3% of dev, which is the engine's noise, bounded by the engine rule in `engines.py`.) For each
margin of `GRID`, largest (safest) first, the smallest that keeps every bound below is kept: top-1 agreement
>= `MIN_AGREEMENT`, dev leaf accuracy at most `MAX_ACCURACY_LOSS` lower, tag micro-F1 at most `MAX_TAG_F1_LOSS`
lower, expected calibration error at most `MAX_ECE_GAIN` higher. The served engine with that cascade must then
still keep the engine bound against PyTorch fp32 without it (>= `engines.MIN_AGREEMENT` top-1 agreement, <=
`engines.MAX_ACCURACY_LOSS` accuracy lost); otherwise the version has no cascade.

The dev titles are scored with each margin, which also times it. The tag titles go through the encoder once,
without the cascade: a margin only decides which of their rows take the linear part's answer instead (the rows it
keeps get the same scores in any batch), so each margin costs a pass over the dev titles, not over the tag titles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from training import metrics, serving

GRID = (2.0, 1.5, 1.2, 1.0, 0.8)
SCALES = np.geomspace(0.02, 4.0, 80)  # tried for the skipped rows' `linear_scale`
MIN_AGREEMENT = 0.998
MAX_ACCURACY_LOSS = 0.001
MAX_TAG_F1_LOSS = 0.001
MAX_ECE_GAIN = 0.005
BATCH = 64  # LISTINGS_MAX_BATCH's default: rows are scored in the batches Triton sees
THREADS = 2


@dataclass(frozen=True)
class TagDev:
    """The dev titles that carry tag labels: texts, targets [n, T] and the mask of known groups [n, T]."""

    texts: Sequence[str]
    y: np.ndarray
    mask: np.ndarray


def _score(clf: Any, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    """Probabilities in batches of `BATCH`, as the worker sends them, and the seconds it took."""
    t0 = time.perf_counter()
    parts = [clf.score_texts(list(texts[i : i + BATCH])).probs for i in range(0, len(texts), BATCH)]
    return np.concatenate(parts), time.perf_counter() - t0


def fuse(clf: Any, texts: Sequence[str]) -> Any:
    """`clf.fuse` of every text in batches of `BATCH`, joined into one `Fused` (see `classifier.py`)."""
    mod = serving.classifier()
    parts = [clf.fuse(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]

    def joined(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return mod.Fused(*(joined(f.name) for f in fields(mod.Fused)))


def _figures(
    clf: Any, texts: Sequence[str], y: np.ndarray, lin: np.ndarray, tags: tuple[TagDev, Any] | None
) -> dict[str, Any]:
    """What `clf` gives with its cascade margin: on the dev titles (`lin`: their linear category scores) by scoring
    them, timed; on the tag titles from their one encoder pass without the cascade (`tags`: the titles and their
    `fuse`), of which a margin only changes which rows take the linear part's answer."""
    probs, seconds = _score(clf, texts)
    pred = probs.argmax(1)
    ok = y >= 0
    out: dict[str, Any] = {
        "pred": pred,
        "accuracy_leaf": float(np.mean(pred[ok] == y[ok])) if ok.any() else 0.0,
        "ece": metrics.calibration(probs.max(1)[ok], pred[ok] == y[ok])["ece"] if ok.any() else 0.0,
        "titles_per_second": round(len(texts) / seconds, 1),
        "skipped_share": float(np.mean(clf.easy_rows(lin))) if clf.cascade_margin else 0.0,
    }
    if tags is not None:
        tag_dev, fused = tags
        given = clf.given_tags(clf.finish(fused, clf.easy_rows(fused.linear)).tags).astype(np.int8)
        out["tag_micro_f1"] = metrics.tag_metrics(tag_dev.y, given, tag_dev.mask)["tag_micro_f1"]
    return out


def fit_scale(clf: Any, lin: np.ndarray, y: np.ndarray) -> float:
    """The factor on the linear term's log-probabilities that fits the dev rows the cascade skips best (least
    log-loss; `lin`: their linear category scores): the fusion's own `(1-α)/τ` calibrates the sum of both terms,
    and on its own the linear term is then under-confident wherever the fusion leans on the encoder (α high, T
    low). The fusion's factor when no labelled dev row is skipped."""
    easy = clf.easy_rows(lin) & (y >= 0)
    if not easy.any():
        return float(clf.cascade_scale)
    t = float(clf.meta.get("fusion", {}).get("linear_temperature", 1.0))
    z = serving.classifier().log_softmax(t * lin[easy])
    picked = z[np.arange(len(z)), y[easy]]

    def loss(s: float) -> float:
        logits = s * z
        top = logits.max(1)
        return float(np.mean(top + np.log(np.exp(logits - top[:, None]).sum(1)) - s * picked))

    return min((float(s) for s in SCALES), key=loss)


def choose(
    folder: Path,
    engine: str,
    texts: Sequence[str],
    y: np.ndarray,
    tag_dev: TagDev | None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The cascade block of classifier.json: the chosen `linear_margin` (or None) and what each margin gave."""
    from training import engines

    make = serving.classifier().Classifier
    clf = make(folder, engine="torch", threads=THREADS, cascade=False)
    if not clf.can_cascade():
        echo("cascade: none (the version has no linear part in its fusion)")
        return {"linear_margin": None, "why": "no linear category (and tag) scores in the fusion"}
    clf.score_texts(list(texts[:BATCH]))  # warm-up
    lin = clf.linear(list(texts))[0]
    tags = (tag_dev, fuse(clf, tag_dev.texts)) if tag_dev is not None and len(tag_dev.texts) else None
    full = _figures(clf, texts, y, lin, tags)
    rows = []
    chosen = None
    for margin in GRID:
        clf.cascade_margin = margin
        clf.cascade_scale = fit_scale(clf, lin, y)
        got = _figures(clf, texts, y, lin, tags)
        row = {
            "linear_margin": margin,
            "linear_scale": round(clf.cascade_scale, 4),
            "skipped_share": round(got["skipped_share"], 4),
            "top1_agreement": round(float(np.mean(got["pred"] == full["pred"])), 4),
            "accuracy_leaf": round(got["accuracy_leaf"], 4),
            "ece": round(got["ece"], 4),
            "titles_per_second": got["titles_per_second"],
        }
        why = []
        if row["top1_agreement"] < MIN_AGREEMENT:
            why.append(f"top-1 agreement {row['top1_agreement']} < {MIN_AGREEMENT}")
        if full["accuracy_leaf"] - got["accuracy_leaf"] > MAX_ACCURACY_LOSS:
            why.append(f"leaf accuracy {got['accuracy_leaf']:.4f} vs {full['accuracy_leaf']:.4f}")
        if got["ece"] - full["ece"] > MAX_ECE_GAIN:
            why.append(f"ECE {got['ece']:.4f} vs {full['ece']:.4f}")
        if "tag_micro_f1" in got:
            row["tag_micro_f1"] = round(got["tag_micro_f1"], 4)
            if full["tag_micro_f1"] - got["tag_micro_f1"] > MAX_TAG_F1_LOSS:
                why.append(f"tag micro-F1 {got['tag_micro_f1']:.4f} vs {full['tag_micro_f1']:.4f}")
        row["why_not"] = why
        rows.append(row)
        if why:
            break  # smaller margins skip more rows: they only get worse
        chosen = row
    served: dict[str, Any] = {}
    if chosen is not None:  # the engine that will serve, with this cascade, against PyTorch fp32 without it
        fast = make(folder, engine=engine, threads=THREADS, cascade=False)
        fast.cascade_margin, fast.cascade_scale = chosen["linear_margin"], chosen["linear_scale"]
        fast.score_texts(list(texts[:BATCH]))
        got = _figures(fast, texts, y, lin, None)
        served = {
            "engine": engine,
            "top1_agreement_with_torch_fp32": round(float(np.mean(got["pred"] == full["pred"])), 4),
            "accuracy_leaf": round(got["accuracy_leaf"], 4),
            "titles_per_second": got["titles_per_second"],
        }
        served_why = []
        if served["top1_agreement_with_torch_fp32"] < engines.MIN_AGREEMENT:
            served_why.append(f"{engine} with it agrees with torch fp32 on {served['top1_agreement_with_torch_fp32']}")
        if full["accuracy_leaf"] - got["accuracy_leaf"] > engines.MAX_ACCURACY_LOSS:
            lost = 100 * (full["accuracy_leaf"] - got["accuracy_leaf"])
            served_why.append(f"{engine} with it loses {lost:.2f} points")
        served["why_not"] = served_why
        if served_why:
            chosen = None
    if chosen:
        echo(
            f"cascade: linear margin {chosen['linear_margin']} skips the encoder for {chosen['skipped_share']:.0%} of "
            f"dev rows; {engine} with it {served['titles_per_second']:.0f} titles/s, top-1 agreement with torch fp32 "
            f"{served['top1_agreement_with_torch_fp32']:.4f}"
        )
    else:
        why = served.get("why_not") or rows[0]["why_not"]
        echo(f"cascade: none ({'; '.join(why)})")
    return {
        "linear_margin": chosen["linear_margin"] if chosen else None,
        "linear_scale": chosen["linear_scale"] if chosen else None,
        "chosen_on": "torch",
        "without": {
            "accuracy_leaf": round(full["accuracy_leaf"], 4),
            "ece": round(full["ece"], 4),
            "titles_per_second": full["titles_per_second"],
            **({"tag_micro_f1": round(full["tag_micro_f1"], 4)} if "tag_micro_f1" in full else {}),
        },
        "grid": rows,
        "served": served,
        "bound": {
            "min_top1_agreement": MIN_AGREEMENT,
            "max_accuracy_loss": MAX_ACCURACY_LOSS,
            "max_tag_micro_f1_loss": MAX_TAG_F1_LOSS,
            "max_ece_gain": MAX_ECE_GAIN,
            "served_engine": {
                "min_top1_agreement": engines.MIN_AGREEMENT,
                "max_accuracy_loss": engines.MAX_ACCURACY_LOSS,
            },
        },
        "measured_on": f"dev split, {len(texts)} titles (+ {len(tag_dev.texts) if tag_dev else 0} tag titles), "
        f"batches of {BATCH}, {THREADS} CPU threads",
    }
