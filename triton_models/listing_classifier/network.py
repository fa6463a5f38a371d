"""The classifier network and its batch predictor, shared by training and the Triton model.

This file is self-contained (torch + transformers only): export copies it into every model version
directory, and the Triton python backend imports it from there, so a version always runs the code it
was trained with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

MAX_TITLE_CHARS = 1000  # longer titles are truncated, not rejected (see DESIGN: listings.new)
MAX_BRAND_CHARS = 100


def compose_text(title: str, brand: str | None = None) -> str:
    """The model's input text: the title, with the brand in front when the title does not already name it."""
    title = " ".join(title[:MAX_TITLE_CHARS].split())
    brand = " ".join((brand or "")[:MAX_BRAND_CHARS].split())
    if brand and brand.lower() not in title.lower():
        return f"{brand} {title}"
    return title


class ListingNet(nn.Module):
    """MiniLM encoder, mean pooling, a softmax category head and a sigmoid (multi-label) tag head."""

    def __init__(self, encoder: nn.Module, n_categories: int, n_tags: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.category = nn.Linear(hidden, n_categories)
        self.tags = nn.Linear(hidden, n_tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = self.dropout(pooled)
        return self.category(pooled), self.tags(pooled)


def pad_batch(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as a right-padded `input_ids` tensor and its attention mask, both [len(rows), longest]."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        input_ids[j, : len(r)] = torch.tensor(r)
        mask[j, : len(r)] = 1
    return input_ids, mask


def build(encoder_dir: Path, n_categories: int, n_tags: int) -> ListingNet:
    from transformers import AutoConfig, AutoModel

    encoder = AutoModel.from_pretrained(str(encoder_dir), config=AutoConfig.from_pretrained(str(encoder_dir)))
    return ListingNet(encoder, n_categories, n_tags)


class Predictor:
    """Loads a trained artifact directory and scores batches of listings.

    Batches are sorted by token length and cut into sub-batches, each padded only to its own longest row.
    """

    def __init__(self, artifact: Path, device: str = "cpu", half: bool = False, sub_batch: int = 64) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        artifact = Path(artifact)
        self.meta = json.loads((artifact / "meta.json").read_text())
        self.labels = json.loads((artifact / "labels.json").read_text())
        self.tag_info = json.loads((artifact / "tags.json").read_text())
        self.max_len = int(self.meta["max_len"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(artifact / "tokenizer"))
        config = AutoConfig.from_pretrained(str(artifact / "encoder"))
        encoder = AutoModel.from_config(config)
        self.net = ListingNet(encoder, len(self.labels["categories"]), len(self.tag_info["tags"]))
        state = torch.load(artifact / "weights.pt", map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net.eval()
        self.device = torch.device(device)
        self.half = half and self.device.type == "cuda"
        self.net.to(self.device)
        if self.half:
            self.net.half()
        self.sub_batch = sub_batch

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_len)["input_ids"]

    @torch.inference_mode()
    def predict_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Category probabilities [n, C] and tag probabilities [n, T] for already composed texts."""
        n = len(texts)
        cats = np.zeros((n, len(self.labels["categories"])), dtype=np.float32)
        tags = np.zeros((n, len(self.tag_info["tags"])), dtype=np.float32)
        if n == 0:
            return cats, tags
        ids = self.encode(texts)
        order = sorted(range(n), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, n, self.sub_batch):
            rows = order[start : start + self.sub_batch]
            input_ids, mask = pad_batch([ids[i] for i in rows], pad)
            cat_logits, tag_logits = self.net(input_ids.to(self.device), mask.to(self.device))
            cats[rows] = torch.softmax(cat_logits.float(), -1).cpu().numpy()
            tags[rows] = torch.sigmoid(tag_logits.float()).cpu().numpy()
        return cats, tags

    def predict(
        self, titles: Sequence[str], brands: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        brands = brands if brands is not None else [None] * len(titles)
        return self.predict_texts([compose_text(t, b) for t, b in zip(titles, brands, strict=True)])

    def result(self, cat_probs: np.ndarray, tag_probs: np.ndarray, k: int = 5) -> dict:
        """The RESULT JSON object of one row (the worker's contract)."""
        top = np.argsort(-cat_probs, kind="stable")[:k]
        cats = self.labels["categories"]

        def entry(i: int) -> dict:
            c = cats[int(i)]
            return {"id": c["id"], "name": c["name"], "path": list(c["path"])}

        names, thresholds = self.tag_info["tags"], self.tag_info["thresholds"]
        tags = [
            {"tag": names[j], "score": round(float(tag_probs[j]), 4)}
            for j in np.argsort(-tag_probs, kind="stable")
            if tag_probs[j] >= thresholds[j]
        ]
        return {
            "category": entry(top[0]),
            "confidence": round(float(cat_probs[top[0]]), 4),
            "alternatives": [{**entry(i), "score": round(float(cat_probs[i]), 4)} for i in top[1:]],
            "tags": tags,
        }
