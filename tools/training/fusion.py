"""Fusion, calibration and tag thresholds, all tuned on the dev split (the test split is only scored).

* Categories: level weight λ, linear temperature T and fusion weight α by dev leaf accuracy (a grid), then the
  calibration temperature τ by dev log-loss, so that `confidence` means what it says.
* Tags: fusion weight β and linear temperature by dev log-loss on the labelled groups, then one threshold per
  tag group (`gender`, `colour`, ...) by the group's dev micro-F1, given to each of its tags. A threshold per tag
  overfitted: a rare colour has one to five dev titles, and the threshold that happened to suit them cost its
  test recall (on the default data, per-tag thresholds: test tag macro-F1 0.835 against 0.850 per group).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
LINEAR_TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
ALPHAS = tuple(round(a, 2) for a in np.arange(0.0, 1.01, 0.1))
TAG_BETAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
TAG_TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def hierarchical(
    leaf: np.ndarray, levels: Sequence[np.ndarray], ancestors: Sequence[np.ndarray], lam: float
) -> np.ndarray:
    s = log_softmax(leaf)
    if lam:
        for logits, anc in zip(levels, ancestors, strict=True):
            s = s + lam * log_softmax(logits)[:, anc]
    return s


def fuse(trans: np.ndarray, linear: np.ndarray | None, alpha: float, temp: float) -> np.ndarray:
    if linear is None or alpha >= 1.0:
        return trans
    return alpha * trans + (1 - alpha) * log_softmax(temp * linear)


def _nll(scores: np.ndarray, y: np.ndarray) -> float:
    lp = log_softmax(scores)
    ok = y >= 0
    return float(-lp[np.flatnonzero(ok), y[ok]].mean()) if ok.any() else 0.0


def calibrate(scores: np.ndarray, y: np.ndarray) -> float:
    """The temperature τ minimising the dev log-loss of softmax(scores/τ)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    losses = [_nll(scores / t, y) for t in grid]
    return float(grid[int(np.argmin(losses))])


def tune_categories(
    leaf: np.ndarray,
    levels: Sequence[np.ndarray],
    ancestors: Sequence[np.ndarray],
    linear: np.ndarray | None,
    y: np.ndarray,
    fixed: dict | None = None,
) -> dict:
    """Best fusion on dev: {level_weight, linear_temperature, alpha, temperature, dev_accuracy}. `fixed` pins
    parameters (ablations in the report)."""
    fixed = fixed or {}
    ok = y >= 0
    best: tuple[float, float, float, float, float] | None = None
    lams = [fixed["level_weight"]] if "level_weight" in fixed else (LEVEL_WEIGHTS if levels else (0.0,))
    alphas = [fixed["alpha"]] if "alpha" in fixed else (ALPHAS if linear is not None else (1.0,))
    temps = LINEAR_TEMPERATURES if linear is not None else (1.0,)
    for lam in lams:
        trans = hierarchical(leaf, levels, ancestors, lam)
        for temp in temps:
            lin = log_softmax(temp * linear) if linear is not None else None
            accs = []
            for a in alphas:
                s = trans if lin is None or a >= 1.0 else a * trans + (1 - a) * lin
                accs.append(float(np.mean(s[ok].argmax(1) == y[ok])))
            # choose alpha on the 3-point moving average of dev accuracy: a lone spike on a few hundred
            # dev rows is noise, a plateau is not
            for i, a in enumerate(alphas):
                window = accs[max(0, i - 1) : i + 2]
                smooth = sum(window) / len(window)
                # ties: prefer more transformer, less hierarchy term, lower temperature (simplest)
                key = (round(smooth, 6), a, -lam, -temp)
                if best is None or key > best[:4]:
                    best = (*key, accs[i])
    assert best is not None
    _, a, neg_lam, neg_temp, acc = best
    lam, temp = -neg_lam, -neg_temp
    scores = fuse(hierarchical(leaf, levels, ancestors, lam), linear, a, temp)
    return {
        "level_weight": lam,
        "linear_temperature": temp,
        "alpha": a,
        "temperature": calibrate(scores, y),
        "dev_accuracy": round(acc, 4),
    }


def category_scores(leaf, levels, ancestors, linear, params: dict) -> np.ndarray:
    s = fuse(
        hierarchical(leaf, levels, ancestors, params["level_weight"]),
        linear,
        params["alpha"],
        params["linear_temperature"],
    )
    return s / params["temperature"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _bce(z: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    p = sigmoid(z)
    loss = -(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7))
    return float((loss * mask).sum() / max(1.0, mask.sum()))


def tag_logits(trans: np.ndarray, linear: np.ndarray | None, beta: float, temp: float) -> np.ndarray:
    if linear is None or beta >= 1.0:
        return trans
    return beta * trans + (1 - beta) * temp * linear


def tune_tags(
    trans: np.ndarray, linear: np.ndarray | None, y: np.ndarray, mask: np.ndarray, groups: Sequence[str]
) -> dict:
    """`groups[j]`: tag j's group; the thresholds are per group (see the module's docstring)."""
    best = None
    for beta in TAG_BETAS if linear is not None else (1.0,):
        for temp in TAG_TEMPERATURES if linear is not None and beta < 1.0 else (1.0,):
            loss = _bce(tag_logits(trans, linear, beta, temp), y, mask)
            if best is None or loss < best[0]:
                best = (loss, beta, temp)
    assert best is not None
    _, beta, temp = best
    probs = sigmoid(tag_logits(trans, linear, beta, temp))
    return {"beta": beta, "linear_temperature": temp, "thresholds": thresholds(probs, y, mask, groups)}


def thresholds(
    probs: np.ndarray, y: np.ndarray, mask: np.ndarray, groups: Sequence[str], default: float = 0.5
) -> list[float]:
    """Per tag, its group's threshold in 0.05..0.95: the one that maximises the micro-F1 of the group's tags over
    their labelled dev rows (ties: the higher); `default` for a group with no positive dev label."""
    out = [default] * y.shape[1]
    for group in dict.fromkeys(groups):
        cols = [j for j, g in enumerate(groups) if g == group]
        rows = mask[:, cols] > 0
        pos = (y[:, cols] == 1) & rows
        if not pos.any():
            continue
        best, best_f1 = default, -1.0
        for t in THRESHOLDS:
            pred = (probs[:, cols] >= t) & rows
            f1 = 2 * float((pred & pos).sum()) / (pred.sum() + pos.sum())
            if f1 >= best_f1:
                best, best_f1 = float(t), f1
        for j in cols:
            out[j] = best
    return out
