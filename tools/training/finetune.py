"""Fine-tuning MiniLM-L6 with the leaf, level and tag heads; the epoch with the best dev accuracy is kept.

One loss over mixed, length-bucketed batches: cross-entropy on the leaf, plus `LEVEL_LOSS_WEIGHT` × the
level heads' cross-entropies (hierarchy-aware), plus `TAG_LOSS_WEIGHT` × binary cross-entropy on the tag
cells that are labelled: a tag-file row's groups, and — as negatives — every group on a category row whose
top level the group does not apply to (so the tag head learns that a toner cartridge has no gender).
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

LR_ENCODER = 2e-4
LR_HEADS = 3e-3
LEVEL_LOSS_WEIGHT = 0.5
TAG_LOSS_WEIGHT = 0.5
WARMUP = 0.06
# scales tried for the class-name head init (0: the names say nothing, e.g. codes)
SCALES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
LABEL_INIT_TITLES = 3000  # training titles sampled to centre and scale it


@dataclass
class Item:
    ids: list[int]
    label: int  # leaf class, -100 when not a category row
    levels: list[int]  # per head level, -100 when not a category row
    tag_target: np.ndarray | None  # [T] 0/1
    tag_mask: np.ndarray | None  # [T] 1 where labelled


@dataclass
class FitResult:
    net: Any
    best_epoch: int
    curve: list[dict]
    seconds: float


def batches(items: list[Item], batch_size: int, rng: random.Random) -> list[list[Item]]:
    """Shuffle, sort by length inside windows of 50 batches (little padding), shuffle the batches."""
    items = items[:]
    rng.shuffle(items)
    window = batch_size * 50
    out = []
    for start in range(0, len(items), window):
        chunk = sorted(items[start : start + window], key=lambda it: len(it.ids))
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def init_biases(net: Any, labels: list[int], tag_targets: np.ndarray | None) -> None:
    """Start the heads at the label priors, so early steps learn text, not base rates."""
    import torch

    with torch.no_grad():
        counts = torch.bincount(torch.tensor(labels), minlength=net.category.out_features).float() + 1.0
        net.category.bias.copy_(torch.log(counts / counts.sum()))
        if tag_targets is not None and tag_targets.size:
            pos = torch.tensor(tag_targets.sum(0), dtype=torch.float) + 1.0
            prior = pos / (len(tag_targets) + 2.0)
            net.tags.bias.copy_(torch.log(prior / (1 - prior)))


def init_label_heads(
    net: Any,
    heads: list[tuple[Any, list[str], np.ndarray]],
    title_ids: list[list[int]],
    encode: Callable[[list[str]], list[list[int]]],
    pad_id: int,
) -> list[dict]:
    """Start each (head, its classes' names, the sample titles' class) as the pretrained encoder's zero-shot
    classifier: a class's weights point from the titles' mean encoding towards the encoding of its name (the path,
    `Clothing > Men's Clothing > Shirts`), centred on the mean of the names, times the scale that fits the sample
    titles best; the biases keep the label priors (`init_biases` runs first). A rare leaf then starts where its name
    puts it instead of at random. Returns per head the scale and the sample's zero-shot accuracy."""
    import torch
    from torch.nn import functional as F

    net.eval()
    found = []
    with torch.inference_mode():
        titles = torch.from_numpy(_pooled(net, title_ids, pad_id))
        mu = titles.mean(0)
        for head, names, labels in heads:
            y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
            named = torch.from_numpy(_pooled(net, encode(names), pad_id))
            direction = F.normalize(named - named.mean(0), dim=1)
            cos = (titles - mu) @ direction.T
            prior = head.bias.detach().clone()
            scale = min(SCALES, key=lambda s: float(F.cross_entropy(s * cos + prior, y)))
            head.weight.copy_(scale * direction)
            head.bias.copy_(prior - scale * (direction @ mu))
            accuracy = float(((scale * cos + prior).argmax(1) == y).float().mean())
            found.append({"classes": len(names), "scale": scale, "zero_shot_accuracy": round(accuracy, 4)})
    net.train()
    return found


def _pooled(net: Any, ids: list[list[int]], pad_id: int, batch: int = 128) -> np.ndarray:
    """The encoder's mean-pooled encodings (no dropout: eval mode is the caller's)."""
    import torch

    from training.serving import classifier

    out = np.zeros((len(ids), net.encoder.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        a, m = classifier().pad([ids[i] for i in rows], pad_id)
        out[rows] = net.pooled(torch.from_numpy(a), torch.from_numpy(m)).numpy()
    return out


def predict_logits(net: Any, ids: list[list[int]], pad_id: int, device: Any, batch: int = 128) -> list[np.ndarray]:
    """The network's outputs (leaf, tags, *levels) for token-id rows, in eval mode."""
    import torch

    from training.serving import classifier

    net.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outs: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            a, m = classifier().pad([ids[i] for i in rows], pad_id)
            res = net(torch.from_numpy(a).to(device), torch.from_numpy(m).to(device))
            if not outs:
                outs = [np.zeros((len(ids), r.shape[1]), dtype=np.float32) for r in res]
            for o, r in zip(outs, res, strict=True):
                o[rows] = r.float().cpu().numpy()
    net.train()
    return outs


def fit(
    net: Any,
    cat_items: list[Item],
    tag_pool: list[Item],
    dev_ids: list[list[int]],
    dev_labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    tags_per_epoch: int,
    pad_id: int,
    seed: int,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
) -> FitResult:
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    rng = random.Random(seed)
    dev = torch.device(device)
    net.to(dev)
    heads = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
    # the fused kernel updates every tensor in one pass: the per-tensor loop took a quarter of each CPU step
    opt = torch.optim.AdamW(
        [{"params": list(net.encoder.parameters()), "lr": LR_ENCODER}, {"params": heads, "lr": LR_HEADS}],
        weight_decay=0.01,
        fused=dev.type in ("cpu", "cuda"),
    )
    n_tag_rows = min(tags_per_epoch, len(tag_pool))
    per_epoch = math.ceil((len(cat_items) + n_tag_rows) / batch_size)
    total = per_epoch * epochs
    warmup = max(1, int(WARMUP * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    n_tags = net.tags.out_features
    n_levels = len(net.levels)
    best = (-1.0, -1)
    best_state = None
    curve = []
    t0 = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        items = cat_items + rng.sample(tag_pool, n_tag_rows)
        bar = tqdm(
            batches(items, batch_size, rng),
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="batch",
            mininterval=2.0 if sys.stderr.isatty() else 30.0,
        )
        for batch in bar:
            ids, mask = (torch.from_numpy(x).to(dev) for x in _pad(batch, pad_id))
            out = net(ids, mask)
            leaf, tags, levels = out[0], out[1], out[2:]
            y = torch.tensor([it.label for it in batch], device=dev)
            loss = torch.zeros((), device=dev)
            if (y >= 0).any():
                loss = loss + F.cross_entropy(leaf, y, ignore_index=-100)
                for k in range(n_levels):
                    yk = torch.tensor([it.levels[k] for it in batch], device=dev)
                    loss = loss + LEVEL_LOSS_WEIGHT * F.cross_entropy(levels[k], yk, ignore_index=-100)
            if n_tags and any(it.tag_mask is not None for it in batch):
                target = np.zeros((len(batch), n_tags), dtype=np.float32)
                weight = np.zeros((len(batch), n_tags), dtype=np.float32)
                for i, it in enumerate(batch):
                    if it.tag_mask is not None:
                        target[i], weight[i] = it.tag_target, it.tag_mask
                w = torch.from_numpy(weight).to(dev)
                rows = float((w.sum(1) > 0).sum().item())
                if rows:
                    bce = F.binary_cross_entropy_with_logits(
                        tags, torch.from_numpy(target).to(dev), weight=w, reduction="sum"
                    )
                    loss = loss + TAG_LOSS_WEIGHT * bce / rows
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # drawn with the count, at its interval
        bar.close()
        leaf_dev = predict_logits(net, dev_ids, pad_id, dev)[0]
        ok = dev_labels >= 0
        acc = float(np.mean(leaf_dev[ok].argmax(1) == dev_labels[ok])) if ok.any() else 0.0
        curve.append(
            {"epoch": epoch + 1, "dev_accuracy_leaf": round(acc, 4), "seconds": round(time.perf_counter() - t0)}
        )
        echo(f"epoch {epoch + 1}: dev leaf accuracy {acc:.4f} ({time.perf_counter() - t0:.0f}s)")
        if acc >= best[0]:  # ties: the later epoch (more training, same dev accuracy)
            best = (acc, epoch + 1)
            best_state = copy.deepcopy(net.state_dict())
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return FitResult(net, best[1], curve, round(time.perf_counter() - t0, 1))


def _pad(batch: list[Item], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    from training.serving import classifier

    return classifier().pad([it.ids for it in batch], pad_id)
