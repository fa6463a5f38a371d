"""Triton python-backend model of the listing classifier (export copies it into each version as model.py).

One `execute()` call merges every request it is given into one scoring pass (rows sorted by token length,
tokenized here over the merged batch), then returns one response per request. A bad request (blank title,
invalid UTF-8, mismatched BRAND rows) gets its own `TritonError`; the other requests of the batch are
served. Titles are truncated (1,000 characters, then `max_len` tokens), never rejected for length.
DESCRIPTION is accepted for forward compatibility and not used: this model was trained on titles (+ brand).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOP_K = 5


class BadRequest(ValueError):
    pass


def _strings(request, name: str) -> list[bytes] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [v if isinstance(v, bytes) else str(v).encode() for v in tensor.as_numpy().reshape(-1)]


def _decode(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not valid UTF-8 (byte {exc.start})") from exc


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        here = Path(__file__).resolve().parent
        sys.path.insert(0, str(here))
        import network  # the network.py exported beside this file
        import torch

        self.network = network
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        if gpu:
            device = f"cuda:{args.get('model_instance_device_id', '0')}"
        else:
            device = "cpu"
            torch.set_num_threads(int(params.get("cpu_threads", "2") or 2))
        self.predictor = network.Predictor(here, device=device, half=gpu, sub_batch=256 if gpu else 64)
        self.n_tags = len(self.predictor.tag_info["tags"])

    def _texts(self, request) -> list[str]:
        titles = _strings(request, "TITLE")
        if not titles:
            raise BadRequest("TITLE is required and must hold at least one row")
        brands = _strings(request, "BRAND")
        if brands is not None and len(brands) != len(titles):
            raise BadRequest(f"BRAND has {len(brands)} rows, TITLE has {len(titles)}")
        texts = []
        for i, raw in enumerate(titles):
            title = _decode(raw, f"TITLE row {i}").strip()[: self.network.MAX_TITLE_CHARS]
            if not title.strip():
                raise BadRequest(f"TITLE row {i} is empty or blank")
            brand = _decode(brands[i], f"BRAND row {i}") if brands is not None else None
            texts.append(self.network.compose_text(title, brand))
        return texts

    def execute(self, requests: list) -> list:
        spans: list[tuple[int, int] | str] = []
        merged: list[str] = []
        for request in requests:
            try:
                texts = self._texts(request)
            except BadRequest as exc:
                spans.append(str(exc))
                continue
            spans.append((len(merged), len(texts)))
            merged += texts
        try:
            cat_probs, tag_probs = self.predictor.predict_texts(merged)
        except Exception as exc:  # noqa: BLE001 - answer every request instead of crashing the stub
            return [_error(f"classifier failed: {exc!r}", internal=True) for _ in requests]
        return [
            self._response(span, cat_probs, tag_probs) if not isinstance(span, str) else _error(span) for span in spans
        ]

    def _response(self, span: tuple[int, int], cat_probs: np.ndarray, tag_probs: np.ndarray):
        start, n = span
        cats, tags = cat_probs[start : start + n], tag_probs[start : start + n]
        top = np.argsort(-cats, axis=1, kind="stable")[:, :TOP_K]
        scores = np.take_along_axis(cats, top, axis=1)
        results = np.array(
            [
                [json.dumps(self.predictor.result(c, t, TOP_K), ensure_ascii=False).encode()]
                for c, t in zip(cats, tags, strict=True)
            ],
            dtype=object,
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("CATEGORY_IDS", top.astype(np.int32)),
                pb_utils.Tensor("CATEGORY_SCORES", scores.astype(np.float32)),
                pb_utils.Tensor("TAG_SCORES", tags.astype(np.float32).reshape(n, self.n_tags)),
                pb_utils.Tensor("RESULT", results),
            ]
        )

    def finalize(self) -> None:
        self.predictor = None


def _error(message: str, internal: bool = False):
    code = getattr(pb_utils.TritonError, "INTERNAL" if internal else "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
