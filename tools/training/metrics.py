"""Dev-split metrics shared by the transformer and the baseline, and tag-threshold calibration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def category_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[Sequence[str]]) -> dict:
    """Accuracy at each taxonomy level (paths cut to that level), leaf accuracy, macro and weighted F1."""
    from sklearn.metrics import f1_score

    out: dict[str, float] = {}
    for level in (1, 2):
        hits = [tuple(classes[t][:level]) == tuple(classes[p][:level]) for t, p in zip(y_true, y_pred, strict=True)]
        out[f"accuracy_l{level}"] = float(np.mean(hits))
    # classes are distinct paths of at most three levels, so level-3 accuracy is the leaf (exact class) accuracy
    out["accuracy_leaf"] = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    out["macro_f1"] = float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    out["weighted_f1"] = float(f1_score(y_true, y_pred, average="weighted", zero_division=0))
    return out


def tag_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    return {
        "tag_micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "tag_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def multi_hot(label_lists: Sequence[Sequence[int]], n: int) -> np.ndarray:
    y = np.zeros((len(label_lists), n), dtype=np.int8)
    for i, labels in enumerate(label_lists):
        y[i, list(labels)] = 1
    return y


def tune_thresholds(probs: np.ndarray, y: np.ndarray, default: float = 0.5) -> list[float]:
    """Per tag, the threshold in 0.05..0.95 that maximises F1 on the calibration split (ties: the higher)."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    out = []
    for j in range(y.shape[1]):
        pos = y[:, j] == 1
        if not pos.any():
            out.append(default)
            continue
        best, best_f1 = default, -1.0
        for t in grid:
            pred = probs[:, j] >= t
            tp = float((pred & pos).sum())
            f1 = 2 * tp / (pred.sum() + pos.sum())
            if f1 >= best_f1:
                best, best_f1 = float(t), f1
        out.append(best)
    return out
