"""The report's figures, computed the same way for the model and the baseline.

Categories are compared as paths, so a test title whose leaf has no training title is a miss at the leaf
(and still scored at the levels above it). Level k compares the paths cut to k elements (a shorter path is
its own level-k label)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

Path = tuple[str, ...]


def _f1(y_true: Sequence[str], y_pred: Sequence[str], average: str) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average=average, zero_division=0))


def category_metrics(true: Sequence[Path], pred: Sequence[Path], depth: int) -> dict:
    """Per level (1..depth, and the leaf): accuracy, weighted-F1, macro-F1; the mean of the per-level
    weighted-F1 over the first three levels (or all, if fewer)."""
    out: dict[str, float] = {}
    levels = list(range(1, depth + 1))
    for k in levels:
        t = [" > ".join(p[:k]) for p in true]
        p = [" > ".join(q[:k]) for q in pred]
        out[f"accuracy_l{k}"] = float(np.mean([a == b for a, b in zip(t, p, strict=True)]))
        out[f"weighted_f1_l{k}"] = _f1(t, p, "weighted")
        out[f"macro_f1_l{k}"] = _f1(t, p, "macro")
    t = [" > ".join(p) for p in true]
    p = [" > ".join(q) for q in pred]
    out["accuracy_leaf"] = float(np.mean([a == b for a, b in zip(t, p, strict=True)]))
    out["weighted_f1_leaf"] = _f1(t, p, "weighted")
    out["macro_f1_leaf"] = _f1(t, p, "macro")
    first = levels[:3]
    out["mean_level_weighted_f1"] = float(np.mean([out[f"weighted_f1_l{k}"] for k in first]))
    return out


def tag_metrics(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray) -> dict:
    """Micro- and macro-F1 over the labelled (row, tag) cells."""
    tp = ((y_pred == 1) & (y_true == 1) & (mask > 0)).sum(0).astype(float)
    fp = ((y_pred == 1) & (y_true == 0) & (mask > 0)).sum(0).astype(float)
    fn = ((y_pred == 0) & (y_true == 1) & (mask > 0)).sum(0).astype(float)
    micro = 2 * tp.sum() / max(1.0, 2 * tp.sum() + fp.sum() + fn.sum())
    per = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(1.0, 2 * tp + fp + fn), np.nan)
    present = (y_true * (mask > 0)).sum(0) > 0
    return {
        "tag_micro_f1": float(micro),
        "tag_macro_f1": float(np.nanmean(per[present])) if present.any() else 0.0,
    }


def tag_leakage(
    tops: Sequence[str], tag_pred: np.ndarray, tag_names: Sequence[str], applies: dict[str, list[str] | None]
) -> dict:
    """Per tag group: the share of listings whose true top level is outside the group's categories that still
    get a tag of that group (goal ≤ 2%), and how many listings that share is over."""
    out = {}
    for group, where in applies.items():
        if where is None:
            continue
        cols = [j for j, t in enumerate(tag_names) if t.split(":", 1)[0] == group]
        outside = np.array([t not in set(where) for t in tops])
        if not cols or not outside.any():
            out[group] = {"outside_listings": int(outside.sum()), "share_tagged": 0.0}
            continue
        tagged = tag_pred[:, cols].max(1) > 0
        out[group] = {
            "outside_listings": int(outside.sum()),
            "share_tagged": round(float(tagged[outside].mean()), 4),
        }
    return out


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error and a reliability diagram (equal-width confidence bins)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    ece = 0.0
    for lo, hi in pairwise(edges):
        sel = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if not sel.any():
            continue
        conf, acc, n = float(confidence[sel].mean()), float(correct[sel].mean()), int(sel.sum())
        ece += n / len(confidence) * abs(conf - acc)
        rows.append(
            {"from": round(float(lo), 3), "to": round(float(hi), 3), "confidence": conf, "accuracy": acc, "n": n}
        )
    return {"ece": round(ece, 4), "bins": rows}


def confused_pairs(true: Sequence[Path], pred: Sequence[Path], n: int = 12) -> list[dict]:
    pairs = Counter((" > ".join(t), " > ".join(p)) for t, p in zip(true, pred, strict=True) if t != p)
    return [{"true": t, "predicted": p, "count": c} for (t, p), c in pairs.most_common(n)]


def review_share(confidence: np.ndarray, correct: np.ndarray, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> list:
    """For review thresholds: the share of listings sent to review and the accuracy of those kept."""
    out = []
    for t in thresholds:
        kept = confidence >= t
        out.append(
            {
                "threshold": t,
                "to_review": round(float(1 - kept.mean()), 4),
                "accuracy_kept": round(float(correct[kept].mean()), 4) if kept.any() else None,
            }
        )
    return out
