"""The model report: every figure on the test split, the model next to the baseline of the same run.

`metrics.json` keys: `model` and `baseline` (per-level accuracy / weighted-F1 / macro-F1, leaf, mean of the
per-level weighted-F1, tag micro/macro-F1; with descriptions the baseline is the stronger on test of the two in
`baselines`, fitted on title + description and on the title alone, named by `baseline_input`), `margins`
(model − baseline, in points), `levers` (what each part adds on the test split: transformer alone,
+ hierarchy, + fusion, served without and with the named leaves), `calibration` (ECE and a reliability diagram,
before and after the temperature), `tags` (leakage per group for both), `policies` (test rows with an unseen or
rare leaf, rows served at a shallower depth, rows given a named leaf), `named_leaves` (what training found and dev
chose), `confused_pairs`, `curve` (dev accuracy per epoch), `engines`, `data`, `options`, timings. `report.png`
draws them. The model's figures are those of the worker's results (`Classifier.result`, named leaves included).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.pathfmt import short_pair
from training import fusion, metrics, serving, tags
from training.corpus import Corpus

RARE = 15  # a leaf with fewer training titles than this is "rare"
TEXT_WIDTH = 45  # characters of a class path in the PNG's confused-classes panel


def _paths(classes: list[tuple[str, ...]], pred: np.ndarray) -> list[tuple[str, ...]]:
    return [classes[int(i)] for i in pred]


def evaluate(
    folder: Path,
    c: Corpus,
    lin: Any,
    reference: Any,
    params: dict,
    applies: dict,
    opts: Any,
    fit: Any,
    ancestors: list[np.ndarray],
    echo: Callable[[str], None] = print,
) -> dict:
    import time

    import torch

    from training import finetune

    tax = c.taxonomy
    classes = tax.classes
    depth = tax.depth  # every level (the mean of the per-level weighted-F1 stays over levels 1-3)
    test = c.categories["test"]
    texts = [e.text for e in test]
    true = [e.path for e in test]

    # the model as served: the version folder through classifier.py, its default engine
    served = serving.classifier().Classifier(folder)
    t0 = time.perf_counter()
    scores = served.score_texts(texts)
    eval_rate = len(texts) / max(1e-9, time.perf_counter() - t0)
    pred = scores.probs.argmax(1)
    # what the worker is given: the RESULT of each row (its category with a named leaf where the rule applies)
    results = [served.result(scores.probs[i], scores.tags[i], text=texts[i]) for i in range(len(test))]
    served_paths = [tuple(r["category"]["path"]) for r in results]
    model = metrics.category_metrics(true, served_paths, depth)

    # the baseline: TF-IDF + LinearSVC as specified (its own vectorizer), same training rows, same test rows; with
    # descriptions also fitted on the title alone, and the model is scored against the stronger of the two
    base_test = reference.category_scores(texts)
    baseline = metrics.category_metrics(true, _paths(classes, base_test.argmax(1)), depth)
    baseline_input, baselines = "title", {}
    title_scores = reference.title_only_scores(texts)
    if title_scores is not None:
        title_base = metrics.category_metrics(true, _paths(classes, title_scores.argmax(1)), depth)
        baselines = {
            name: {k: round(v, 4) for k, v in m.items()}
            for name, m in (("title + description", baseline), ("title only", title_base))
        }
        baseline_input = "title + description"
        if title_base["accuracy_leaf"] >= baseline["accuracy_leaf"]:
            base_test, baseline, baseline_input = title_scores, title_base, "title only"
    lin_test = lin.category_scores(texts)  # the fused linear part (dense weights)

    # what each lever gives (torch fp32 outputs, test split)
    net_out = finetune.predict_logits(
        serving.network().load(folder), served.tokenizer.encode(texts), served.tokenizer.pad_id, torch.device("cpu")
    )
    leaf, levels = net_out[0], net_out[2:]
    alone = fusion.hierarchical(leaf, levels, ancestors, 0.0).argmax(1)
    hier = fusion.hierarchical(leaf, levels, ancestors, params["level_weight"]).argmax(1)
    fused = fusion.category_scores(leaf, levels, ancestors, lin_test, params).argmax(1)
    levers = {}
    for name, p in (
        ("transformer", alone),
        ("transformer+hierarchy", hier),
        ("fused (torch fp32)", fused),
        ("served without named leaves", pred),
        ("served", served_paths),
        ("linear part alone", lin_test.argmax(1)),
        ("baseline", base_test.argmax(1)),
    ):
        m = metrics.category_metrics(true, p if isinstance(p, list) else _paths(classes, p), depth)
        levers[name] = {k: round(m[k], 4) for k in ("accuracy_leaf", "weighted_f1_leaf", "mean_level_weighted_f1")}

    # calibration of the served confidences, and what a review threshold does
    conf = np.array([r["confidence"] for r in results])
    correct = np.array([p == t for p, t in zip(served_paths, true, strict=True)])
    raw = fusion.category_scores(leaf, levels, ancestors, lin_test, {**params, "temperature": 1.0})
    raw_conf = np.exp(fusion.log_softmax(raw)).max(1)
    calibration = {
        "served": metrics.calibration(conf, correct),
        "before_temperature": {"ece": metrics.calibration(raw_conf, correct)["ece"]},
        "temperature": params["temperature"],
        "review_thresholds": metrics.review_share(conf, correct),
    }

    # policies: what no-merging and the confident depth mean for the test rows
    counts = dict(zip(classes, tax.counts, strict=True))
    unseen = np.array([t not in counts for t in true])
    rare = np.array([0 < counts.get(t, 0) < RARE for t in true])
    shallower = np.array([r["depth"] < len(r["category"]["path"]) for r in results])
    renamed = np.array([p != classes[int(b)] for p, b in zip(served_paths, pred, strict=True)])  # a named leaf
    prefix_ok = np.array(
        [tuple(r["category"]["path"][: r["depth"]]) == t[: r["depth"]] for r, t in zip(results, true, strict=True)]
    )
    policies = {
        "classes": len(classes),
        "classes_under_15_titles": int(sum(n < RARE for n in tax.counts)),
        "test_rows": len(test),
        "test_rows_unseen_leaf": int(unseen.sum()),
        "test_rows_rare_leaf": int(rare.sum()),
        "accuracy_on_rare_leaf_rows": round(float(correct[rare].mean()), 4) if rare.any() else None,
        "baseline_accuracy_on_rare_leaf_rows": round(
            float(
                np.mean([classes[int(p)] == t for p, t, r in zip(base_test.argmax(1), true, rare, strict=True) if r])
            ),
            4,
        )
        if rare.any()
        else None,
        "depth_threshold": served.meta.get("depth_threshold"),
        "test_rows_served_shallower": int(shallower.sum()),
        "accuracy_of_confident_prefix_on_those": round(float(prefix_ok[shallower].mean()), 4)
        if shallower.any()
        else None,
        "leaf_accuracy_of_those": round(float(correct[shallower].mean()), 4) if shallower.any() else None,
        "test_rows_named_leaf": int(renamed.sum()),
        "test_rows_new_leaf": int(sum(bool(r["category"].get("new")) for r in results)),
        "right_of_the_named": int((renamed & correct).sum()),
    }

    # tags: quality on the tag test rows; leakage on the category test rows
    tag_part: dict = {}
    if c.tag_names:
        index = {t: j for j, t in enumerate(c.tag_names)}
        tag_test = c.tags["test"]
        y_t, m_t = tags.targets(tag_test, index, complete=c.same_file_tags)
        tag_scores = served.score_texts([e.text for e in tag_test]).tags
        model_tags = served.given_tags(tag_scores).astype(np.int8)
        model.update(metrics.tag_metrics(y_t, model_tags, m_t))
        base_tags = (reference.tag_scores([e.text for e in tag_test]) > 0).astype(np.int8)
        baseline.update(metrics.tag_metrics(y_t, base_tags, m_t))
        tops = [t[0] for t in true]
        served_on_cats = served.given_tags(scores.tags)
        base_on_cats = reference.tag_scores(texts) > 0
        tag_part = {
            "test_titles": len(tag_test),
            "applies_to": applies,
            "gates": {
                g: {k: v[k] for k in ("gated", "dev_share_tagged_outside") if k in v}
                for g, v in served.tag_info.get("groups", {}).items()
            },
            "leakage_model": metrics.tag_leakage(tops, served_on_cats, c.tag_names, applies),
            "leakage_baseline": metrics.tag_leakage(tops, base_on_cats, c.tag_names, applies),
        }
    margins = {
        k: round((model[k] - baseline[k]) * 100, 2)
        for k in ("accuracy_leaf", "weighted_f1_leaf", "mean_level_weighted_f1", "accuracy_l1", "tag_micro_f1")
        if k in model and k in baseline
    }
    return {
        "split": {"scored": "test", "tuned": "dev", "trained": "train"},
        "model": {k: round(v, 4) for k, v in model.items()},
        "baseline": {k: round(v, 4) for k, v in baseline.items()},
        "baseline_input": baseline_input,
        "baselines": baselines,
        "margins_points": margins,
        "levers": levers,
        "fusion": params,
        "calibration": calibration,
        "policies": policies,
        "tags": tag_part,
        "confused_pairs": metrics.confused_pairs(true, served_paths),
        "named_leaves": served.meta.get("named_leaves", {}),
        "curve": fit.curve,
        "best_epoch": fit.best_epoch,
        "head_init": served.meta.get("head_init", []),
        "train_seconds": fit.seconds,
        "baseline_seconds": reference.seconds,
        "linear_part_seconds": lin.seconds,
        "eval_rows_per_second": round(eval_rate, 1),
        "engines": served.meta.get("engines", {}),
        "cascade": {
            **served.meta.get("cascade", {}),
            "test_rows_skipping_the_encoder": int(served.easy_rows(served.linear(texts)[0]).sum())
            if served.linear is not None
            else 0,
        },
        "data": c.stats,
        "options": opts.as_dict(),
    }


ROWS = [
    ("accuracy_l1", "accuracy, level 1"),
    ("accuracy_l2", "accuracy, level 2"),
    ("accuracy_leaf", "accuracy, leaf"),
    ("weighted_f1_leaf", "weighted-F1, leaf"),
    ("macro_f1_leaf", "macro-F1, leaf"),
    ("mean_level_weighted_f1", "mean weighted-F1, levels 1-3"),
    ("tag_micro_f1", "tag micro-F1"),
    ("tag_macro_f1", "tag macro-F1"),
]


def table_rows(result: dict) -> list[tuple[str, float, float]]:
    m, b = result["model"], result["baseline"]
    return [(label, m[k], b[k]) for k, label in ROWS if k in m and k in b]


def format_metrics(result: dict) -> str:
    lines = [f"test split: {result['policies']['test_rows']} titles, {result['policies']['classes']} classes"]
    lines.append(f"{'metric':<30}{'model':>10}{'baseline':>10}{'margin':>9}")
    for label, m, b in table_rows(result):
        lines.append(f"{label:<30}{m:>10.4f}{b:>10.4f}{(m - b) * 100:>+8.2f}")
    others = {k: v for k, v in (result.get("baselines") or {}).items() if k != result.get("baseline_input")}
    for name, b in others.items():
        used = result["baseline_input"]
        lines.append(f"(baseline on the {used}; on the {name}: leaf accuracy {b['accuracy_leaf']:.4f})")
    cal = result["calibration"]["served"]["ece"]
    lines.append(f"calibration ECE {cal:.4f}; best epoch {result['best_epoch']}; train {result['train_seconds']:.0f}s")
    cascade = result.get("cascade") or {}
    if cascade.get("linear_margin") is not None:
        lines.append(
            f"cascade: linear margin {cascade['linear_margin']}: {cascade['test_rows_skipping_the_encoder']} of "
            f"{result['policies']['test_rows']} test titles skip the encoder"
        )
    tag_part = result.get("tags") or {}
    for g, v in tag_part.get("leakage_model", {}).items():
        how = "gated by the predicted category" if tag_part.get("gates", {}).get(g, {}).get("gated") else "learned"
        lines.append(
            f"tag group {g}: {v['share_tagged']:.1%} of {v['outside_listings']} listings outside it tagged ({how})"
        )
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = ["| test split | model | TF-IDF + LinearSVC | margin (points) |", "|---|---|---|---|"]
    for label, m, b in table_rows(result):
        lines.append(f"| {label} | {m:.4f} | {b:.4f} | {(m - b) * 100:+.2f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    (a1, a2, a3), (a4, a5, a6) = axes
    rows = table_rows(result)
    x = np.arange(len(rows))
    a1.barh(x + 0.2, [m for _, m, _ in rows], 0.4, label="model", color="#4c72b0")
    a1.barh(x - 0.2, [b for _, _, b in rows], 0.4, label="TF-IDF + LinearSVC", color="#c44e52")
    a1.set_yticks(x, [r[0] for r in rows])
    a1.set_xlim(min(min(r[1], r[2]) for r in rows) - 0.05, 1.0)
    a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=2)
    a1.set_title("test split: model vs baseline (same run)")

    curve = result["curve"]
    a2.plot([c["epoch"] for c in curve], [c["dev_accuracy_leaf"] for c in curve], marker="o")
    a2.axvline(result["best_epoch"], color="grey", linestyle=":", label=f"kept: epoch {result['best_epoch']}")
    a2.set_xlabel("epoch")
    a2.set_ylabel("dev leaf accuracy (transformer alone)")
    a2.legend()
    a2.set_title("fine-tuning curve")

    bins = result["calibration"]["served"]["bins"]
    a3.plot([0, 1], [0, 1], color="grey", linestyle=":")
    a3.bar([b["confidence"] for b in bins], [b["accuracy"] for b in bins], width=0.05, alpha=0.7)
    a3.set_xlabel("confidence")
    a3.set_ylabel("accuracy")
    a3.set_title(
        f"reliability (ECE {result['calibration']['served']['ece']:.3f}, "
        f"before temperature {result['calibration']['before_temperature']['ece']:.3f})"
    )

    levers = result["levers"]
    names = list(levers)
    y = np.arange(len(names))
    a4.barh(y, [levers[n]["accuracy_leaf"] for n in names], color="#55a868")
    a4.set_yticks(y, names)
    a4.invert_yaxis()
    a4.set_xlim(min(levers[n]["accuracy_leaf"] for n in names) - 0.03, 1.0)
    for k, n in enumerate(names):
        a4.text(levers[n]["accuracy_leaf"], k, f" {levers[n]['accuracy_leaf']:.4f}", va="center", fontsize=8)
    a4.set_title("levers: leaf accuracy on test")

    leak = (result.get("tags") or {}).get("leakage_model", {})
    base_leak = (result.get("tags") or {}).get("leakage_baseline", {})
    if leak:
        g = list(leak)
        gx = np.arange(len(g))
        a5.bar(gx + 0.2, [leak[k]["share_tagged"] for k in g], 0.4, label="model", color="#4c72b0")
        a5.bar(
            gx - 0.2, [base_leak.get(k, {}).get("share_tagged", 0) for k in g], 0.4, label="baseline", color="#c44e52"
        )
        a5.axhline(0.02, color="grey", linestyle=":", label="goal 2%")
        a5.set_xticks(gx, g)
        a5.legend()
    else:
        a5.axis("off")
        a5.text(0.5, 0.5, "no tags in this run", ha="center", va="center", fontsize=12, color="grey")
    a5.set_title("tags given outside the categories a group applies to")

    a6.axis("off")
    pairs = result["confused_pairs"][:10]
    shown = [short_pair(p["true"], p["predicted"], TEXT_WIDTH) for p in pairs]
    text = "\n".join(f"{p['count']:>3}  {t}\n     → {q}" for p, (t, q) in zip(pairs, shown, strict=True))
    a6.text(0, 1, "most confused (true → predicted)\n\n" + text, va="top", family="monospace", fontsize=8)
    fig.suptitle(
        f"listing classifier report — {result['policies']['classes']} classes, "
        f"{result['policies']['test_rows']} test titles, trained {result['train_seconds']:.0f}s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
