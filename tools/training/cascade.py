"""The cascade margin of a version, chosen on the dev split (see `classifier.py`, 7).

Rows whose linear category scores put one class far ahead of the rest skip the encoder. The fusion weighs the
linear term at a high temperature, so on such rows the encoder almost never changes the answer; skipping it
there is where most of the serving time goes. For each margin of `GRID`, largest (safest) first, the dev split
is scored with and without the cascade through the served code and the default engine; the smallest margin
that keeps every bound below is kept (None: no cascade). Bounds, all against the same engine without cascade:
top-1 agreement >= `MIN_AGREEMENT`, dev leaf accuracy at most `MAX_ACCURACY_LOSS` lower, tag micro-F1 at most
`MAX_TAG_F1_LOSS` lower, expected calibration error at most `MAX_ECE_GAIN` higher.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import metrics, serving

GRID = (2.0, 1.5, 1.2, 1.0, 0.8)
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


def _score(clf: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and tag probabilities in batches of `BATCH`, and the seconds it took."""
    t0 = time.perf_counter()
    parts = [clf.score_texts(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
    seconds = time.perf_counter() - t0
    return np.concatenate([p.probs for p in parts]), np.concatenate([p.tags for p in parts]), seconds


def _figures(clf: Any, texts: Sequence[str], y: np.ndarray, tag_dev: TagDev | None) -> dict[str, Any]:
    probs, _, seconds = _score(clf, texts)
    pred = probs.argmax(1)
    ok = y >= 0
    out: dict[str, Any] = {
        "pred": pred,
        "accuracy_leaf": float(np.mean(pred[ok] == y[ok])) if ok.any() else 0.0,
        "ece": metrics.calibration(probs.max(1)[ok], pred[ok] == y[ok])["ece"] if ok.any() else 0.0,
        "titles_per_second": round(len(texts) / seconds, 1),
        "skipped_share": float(np.mean(clf.easy_rows(clf.linear(list(texts))[0]))) if clf.cascade_margin else 0.0,
    }
    if tag_dev is not None and len(tag_dev.texts):
        _, tag_probs, _ = _score(clf, tag_dev.texts)
        given = ((tag_probs >= clf.tag_thresholds) & (tag_probs > 0)).astype(np.int8)
        out["tag_micro_f1"] = metrics.tag_metrics(tag_dev.y, given, tag_dev.mask)["tag_micro_f1"]
    return out


def choose(
    folder: Path,
    engine: str,
    texts: Sequence[str],
    y: np.ndarray,
    tag_dev: TagDev | None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The cascade block of classifier.json: the chosen `linear_margin` (or None) and what each margin gave."""
    clf = serving.classifier().Classifier(folder, engine=engine, threads=THREADS, cascade=False)
    if not clf.can_cascade():
        echo("cascade: none (the version has no linear part in its fusion)")
        return {"linear_margin": None, "why": "no linear category (and tag) scores in the fusion"}
    clf.score_texts(list(texts[:BATCH]))  # warm-up
    full = _figures(clf, texts, y, tag_dev)
    rows = []
    chosen = None
    for margin in GRID:
        clf.cascade_margin = margin
        got = _figures(clf, texts, y, tag_dev)
        row = {
            "linear_margin": margin,
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
    echo(
        "cascade: "
        + (
            f"linear margin {chosen['linear_margin']} skips the encoder for {chosen['skipped_share']:.0%} of dev rows, "
            f"{chosen['titles_per_second']:.0f} titles/s vs {full['titles_per_second']:.0f} without"
            if chosen
            else f"none ({'; '.join(rows[0]['why_not'])})"
        )
    )
    return {
        "linear_margin": chosen["linear_margin"] if chosen else None,
        "engine": engine,
        "without": {
            "accuracy_leaf": round(full["accuracy_leaf"], 4),
            "ece": round(full["ece"], 4),
            "titles_per_second": full["titles_per_second"],
            **({"tag_micro_f1": round(full["tag_micro_f1"], 4)} if "tag_micro_f1" in full else {}),
        },
        "grid": rows,
        "bound": {
            "min_top1_agreement": MIN_AGREEMENT,
            "max_accuracy_loss": MAX_ACCURACY_LOSS,
            "max_tag_micro_f1_loss": MAX_TAG_F1_LOSS,
            "max_ece_gain": MAX_ECE_GAIN,
        },
        "measured_on": f"dev split, {len(texts)} titles (+ {len(tag_dev.texts) if tag_dev else 0} tag titles), "
        f"batches of {BATCH}, {THREADS} CPU threads",
    }
