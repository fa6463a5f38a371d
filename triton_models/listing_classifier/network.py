"""The classifier network (torch): training builds it, the `torch` engine serves it, export turns it into ONNX.

MiniLM encoder, mean pooling, dropout, then linear heads: the leaf category (every class), one head per
auxiliary taxonomy level (a hierarchy-aware training signal and a consistency term at serving), and the
multi-label tags. `forward` returns `(leaf, tags, *levels)` logits — the same outputs the ONNX graph has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class ListingNet(nn.Module):
    def __init__(
        self, encoder: nn.Module, n_classes: int, level_sizes: Sequence[int], n_tags: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.category = nn.Linear(hidden, n_classes)
        self.levels = nn.ModuleList([nn.Linear(hidden, n) for n in level_sizes])
        self.tags = nn.Linear(hidden, max(1, n_tags))

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.dropout((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.pooled(input_ids, attention_mask)
        return (self.category(x), self.tags(x), *(head(x) for head in self.levels))


def build(encoder_dir: Path, n_classes: int, level_sizes: Sequence[int], n_tags: int) -> ListingNet:
    """A new network on the pretrained encoder (training)."""
    from transformers import AutoModel

    return ListingNet(AutoModel.from_pretrained(str(encoder_dir)), n_classes, level_sizes, n_tags)


def load(folder: Path) -> ListingNet:
    """The trained network of a version folder, in eval mode (serving and export)."""
    from transformers import AutoConfig, AutoModel

    encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(folder / "encoder")))
    labels = json.loads((folder / "labels.json").read_text())
    n_tags = len(json.loads((folder / "tags.json").read_text()).get("tags", []))
    level_sizes = [len(labels["levels"][str(k)]) for k in labels.get("head_levels", [])]
    net = ListingNet(encoder, len(labels["categories"]), level_sizes, n_tags)
    net.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    net.eval()
    return net
