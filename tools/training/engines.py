"""Serving engines of a version: the ONNX graph of the network (fp32) and its int8 dynamically-quantized variant
(each batch's activations get their own scale, so a row's scores move a little with its batch-mates), written
beside the PyTorch weights; each measured on the dev split against PyTorch fp32 through the served code (top-1
agreement of the final category, leaf accuracy, speed, and how much a row's answer moves when the same rows come
in other batches), and the default chosen.

The default is the fastest engine that keeps the accuracy bound: at least `MIN_AGREEMENT` top-1 agreement with
PyTorch fp32 and at most `MAX_ACCURACY_LOSS` less dev leaf accuracy. An engine that misses it is kept in the
folder (a config can still ask for it) and the report says why it is not the default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import serving

MIN_AGREEMENT = 0.99
MAX_ACCURACY_LOSS = 0.005
OPSET = 17
SPEED_THREADS = 2
SPEED_BATCH = 64  # LISTINGS_MAX_BATCH's default


def export_onnx(folder: Path) -> Path:
    """model.onnx: input_ids/attention_mask [batch, sequence] → leaf, tags, level logits (dynamic axes)."""
    import torch

    net = serving.network().load(folder)
    n_levels = len(net.levels)
    names = ["leaf", "tags", *[f"level_{i + 1}" for i in range(n_levels)]]
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    path = folder / "model.onnx"
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    axes.update({n: {0: "batch"} for n in names})
    torch.onnx.export(
        net,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=names,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    net.eval()  # export restores the module's previous mode; keep it in eval
    return path


def quantize_int8(folder: Path) -> Path:
    """model.int8.onnx: int8 weights for the encoder's MatMuls (per channel); the heads stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = folder / "model.onnx"
    graph = onnx.load(str(src)).graph
    outputs = {o.name for o in graph.output}
    heads = [n.name for n in graph.node if set(n.output) & outputs]  # the heads' Gemms write the outputs
    dst = folder / "model.int8.onnx"
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=heads,
    )
    return dst


def measure(folder: Path, engine: str, texts: Sequence[str], y: np.ndarray, reference: np.ndarray | None) -> dict:
    clf = serving.classifier().Classifier(folder, engine=engine, threads=SPEED_THREADS, cascade=False)
    clf.score_texts(list(texts[:SPEED_BATCH]))  # warm-up

    def score(order: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(texts), clf.n_classes), np.float32)
        for i in range(0, len(order), SPEED_BATCH):
            rows = order[i : i + SPEED_BATCH]
            probs[rows] = clf.score_texts([texts[j] for j in rows]).probs
        return probs

    t0 = time.perf_counter()
    # in batches of the size the worker sends (titles in arrival order), as Triton scores them
    probs = score(np.arange(len(texts)))
    seconds = time.perf_counter() - t0
    pred = probs.argmax(1)
    # the same rows in other batches (a seeded shuffle): does a row's answer depend on its batch-mates?
    other = score(np.random.default_rng(0).permutation(len(texts)))
    ok = y >= 0
    return {
        "dev_accuracy_leaf": round(float(np.mean(pred[ok] == y[ok])), 4) if ok.any() else None,
        "top1_agreement_with_torch_fp32": round(float(np.mean(pred == reference)), 4) if reference is not None else 1.0,
        "titles_per_second": round(len(texts) / seconds, 1),
        "file_bytes": _size(folder, engine),
        "other_batches": {
            "top1_changes": int(np.sum(other.argmax(1) != pred)),
            "max_probability_change": round(float(np.abs(other - probs).max()) if len(texts) else 0.0, 6),
        },
        "pred": pred,
    }


def _size(folder: Path, engine: str) -> int:
    name = {"torch": "weights.pt", **serving.classifier().ONNX_FILES}[engine]
    return (folder / name).stat().st_size


def export_and_choose(folder: Path, dev: Sequence[Any], y_dev: np.ndarray, echo: Callable[[str], None] = print) -> dict:
    """Export the ONNX engines, measure every engine on `dev`, choose the default."""
    texts = [e.text for e in dev]
    out: dict[str, Any] = {
        "measured_on": f"dev split, {len(texts)} titles in batches of {SPEED_BATCH}, {SPEED_THREADS} CPU threads"
    }
    found: dict[str, dict] = {}
    found["torch"] = measure(folder, "torch", texts, y_dev, None)
    reference = found["torch"]["pred"]
    try:
        export_onnx(folder)
        found["onnx"] = measure(folder, "onnx", texts, y_dev, reference)
        quantize_int8(folder)
        found["onnx-int8"] = measure(folder, "onnx-int8", texts, y_dev, reference)
    except ImportError as exc:  # onnx/onnxruntime missing: the version serves with torch
        out["onnx_error"] = f"{type(exc).__name__}: {exc}"
    base_acc = found["torch"]["dev_accuracy_leaf"] or 0.0
    verdicts = {}
    for name, m in found.items():
        m.pop("pred")
        reasons = []
        if m["top1_agreement_with_torch_fp32"] < MIN_AGREEMENT:
            reasons.append(f"top-1 agreement {m['top1_agreement_with_torch_fp32']:.4f} < {MIN_AGREEMENT}")
        if m["dev_accuracy_leaf"] is not None and base_acc - m["dev_accuracy_leaf"] > MAX_ACCURACY_LOSS:
            reasons.append(f"loses {100 * (base_acc - m['dev_accuracy_leaf']):.2f} points of dev leaf accuracy")
        verdicts[name] = {"meets_bound": not reasons, "why_not": reasons}
    eligible = [n for n in found if verdicts[n]["meets_bound"]]
    default = max(eligible, key=lambda n: found[n]["titles_per_second"])
    out.update(
        {
            "engines": found,
            "verdicts": verdicts,
            "default": default,
            "bound": {"min_top1_agreement": MIN_AGREEMENT, "max_accuracy_loss": MAX_ACCURACY_LOSS},
        }
    )
    echo(
        "engines: "
        + ", ".join(
            f"{n} {m['titles_per_second']:.0f}/s agree {m['top1_agreement_with_torch_fp32']:.4f}"
            for n, m in found.items()
        )
        + f" -> default {default}"
    )
    return out
