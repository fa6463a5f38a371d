"""Triton python-backend model of the listing classifier (export copies it into each version folder).

One `execute()` call merges every request it is given into one scoring pass (`classifier.py`: tokenized over
the merged batch, rows sorted by token length), then returns one response per request. A bad request (blank
title, invalid UTF-8, a BRAND or DESCRIPTION with a different row count) gets its own `TritonError`; the
other requests of the batch are served. Titles are truncated (1,000 characters, then the version's token
limit), never rejected for length.

Config parameters (`config.pbtxt`): `engine` = `auto` (the version's default, chosen at export by the accuracy
bound) | `torch` | `onnx` | `onnx-int8`; `cascade` = `on` (rows the linear part is sure of skip the encoder, at
the margin the version chose at export; see `classifier.py`) | `off`; `cpu_threads` (the engine's CPU threads, on
a GPU instance too); `nice` (0-19, default 0) = the CPU niceness of the instance's process, every thread of it,
and of a session it then leads alone (`_own_cpu_group`); the background copy that serves backfills sets 19, see
tools/training/background.py. A GPU instance runs on its device (ONNX Runtime's CUDA provider, or torch in fp16).
"""

from __future__ import annotations

import json
import os
import sys
import time
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


def _own_cpu_group(nice: int) -> bool:
    """Leave tritonserver's session for one of this process' own and give that session's autogroup niceness
    `nice`; False where the kernel has no autogroups (or the process already leads a group).

    With `kernel.sched_autogroup_enabled = 1` (most distributions' default) Linux shares the CPU between sessions
    first and weighs a thread's niceness only against the threads of its own session: in tritonserver's session
    the live instances' processes are the only ones a niceness ranks this one below, so whenever they sleep, the
    group's whole weight goes to this process and it takes as much of a busy core as the live worker or Kafka
    does. In a session of its own at autogroup niceness `nice` it ranks below every other group. The stub still
    exits when tritonserver does (it checks its parent every 300 ms), and tritonserver still stops it by pid."""
    try:
        os.setsid()
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(nice))
    except OSError:
        return False
    return True


def _lower_cpu_priority(nice: int) -> None:
    """Set every thread of this process to niceness `nice` (Linux keeps it per thread; threads started later
    inherit it from the thread that starts them)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(task), nice)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile; or a niceness below the current one, which needs privileges


def onnx_providers() -> list[str]:
    """ONNX Runtime's execution providers in this environment (none without ONNX Runtime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def instance_engine(engine: str, gpu: bool, providers: list[str]) -> str:
    """The engine parameter an instance uses. `auto` on a GPU instance: fp32 ONNX on CUDA when ONNX Runtime has
    its CUDA provider (onnxruntime-gpu), else torch in fp16: a CPU-only ONNX Runtime would score a KIND_GPU
    instance's batches on the CPU. On a CPU instance `auto` stays (the version's default engine)."""
    if gpu and engine == "auto":
        return "onnx" if "CUDAExecutionProvider" in providers else "torch"
    return engine


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        here = Path(__file__).resolve().parent
        sys.path.insert(0, str(here))
        import classifier  # the classifier.py exported beside this file (network.py it loads itself)

        self.classifier_mod = classifier
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu"
        # CPU threads of the instance's engine, on a GPU instance too: there torch's own CPU threads (by default
        # one per core) fight the tokenizer and the linear part for the cores; on an H200 with 16 cores a 64-title
        # call took 161 ms of engine time with the default, 13 ms with 1 thread (bench/gpu/gpu_profile.json)
        threads = int(params.get("cpu_threads", "2") or 2)
        # int8 dynamic quantization is a CPU speed-up: a GPU instance runs fp32 ONNX on CUDA, or torch in fp16
        engine = instance_engine(params.get("engine", "auto") or "auto", gpu, onnx_providers() if gpu else [])
        raw_nice = params.get("nice", "0") or "0"
        if not raw_nice.isdigit() or not 0 <= int(raw_nice) <= 19:
            raise ValueError(f"config parameter nice must be an integer 0..19, not {raw_nice!r}")
        nice = int(raw_nice)
        own_group = bool(nice) and _own_cpu_group(nice)
        if nice:
            _lower_cpu_priority(nice)  # before the engine starts its threads, so they inherit it
        cascade = (params.get("cascade", "on") or "on").lower()
        if cascade not in ("on", "off"):
            raise ValueError(f"config parameter cascade must be on or off, not {cascade!r}")
        self.model = classifier.Classifier(here, engine=engine, device=device, threads=threads, cascade=cascade == "on")
        if nice:
            _lower_cpu_priority(nice)  # and any thread that started meanwhile
        running = getattr(self.model.engine, "providers", None)
        if gpu and running is not None and "CUDAExecutionProvider" not in running:
            raise RuntimeError(
                f"a KIND_GPU instance was asked for engine {engine!r}, but ONNX Runtime runs it on {running}: "
                "install onnxruntime-gpu (CUDA and cuDNN matching it) or set the parameter engine to torch"
            )
        margin = self.model.cascade_margin
        pb_utils.Logger.log_info(
            f"listing_classifier: engine {self.model.engine_name} on {device}, "
            + (f"cascade at linear margin {margin}" if margin is not None else "no cascade")
            + (f", CPU niceness {nice}" if nice else "")
            + (" in an autogroup of its own" if own_group else "")
        )

    def _rows(self, request) -> tuple[list[str], list[str | None], list[str | None]]:
        titles = _strings(request, "TITLE")
        if not titles:
            raise BadRequest("TITLE is required and must hold at least one row")
        columns = {}
        for name in ("BRAND", "DESCRIPTION"):
            values = _strings(request, name)
            if values is not None and len(values) != len(titles):
                raise BadRequest(f"{name} has {len(values)} rows, TITLE has {len(titles)}")
            columns[name] = values
        out_titles, brands, descriptions = [], [], []
        for i, raw in enumerate(titles):
            title = _decode(raw, f"TITLE row {i}").strip()[: self.classifier_mod.MAX_TITLE_CHARS]
            if not title:
                raise BadRequest(f"TITLE row {i} is empty or blank")
            if not any(ch.isalnum() for ch in title):  # only emoji, punctuation or invisible characters
                raise BadRequest(f"TITLE row {i} has no letter or digit")
            out_titles.append(title)
            b, d = columns["BRAND"], columns["DESCRIPTION"]
            brands.append(_decode(b[i], f"BRAND row {i}") if b is not None else None)
            descriptions.append(_decode(d[i], f"DESCRIPTION row {i}") if d is not None else None)
        return out_titles, brands, descriptions

    def execute(self, requests: list) -> list:
        started = time.perf_counter()
        spans: list[tuple[int, int] | str | bytes] = []
        texts: list[str] = []
        for request in requests:
            info = _strings(request, "INFO")
            if info and info[0].strip():  # an INFO input left empty is an ordinary classification request
                spans.append(self._info(info[0]))
                continue
            try:
                titles, brands, descriptions = self._rows(request)
            except BadRequest as exc:
                spans.append(str(exc))
                continue
            spans.append((len(texts), len(titles)))
            texts += self.model.texts(titles, brands, descriptions)
        scores, failure = None, ""
        try:
            scores = self.model.score_texts(texts)
        except Exception as exc:  # noqa: BLE001 - answer every request instead of crashing the stub
            failure = f"classifier failed: {exc!r}"
        timing = [(time.perf_counter() - started) * 1000, float(len(texts))]
        out = []
        for span in spans:  # each request gets its own answer: one request's failure is not its batch-mates'
            if isinstance(span, str):
                out.append(_error(span))
            elif isinstance(span, bytes):
                out.append(self._info_response(span))
            elif scores is None:
                out.append(_error(failure, internal=True))
            else:
                try:
                    out.append(self._response(span, scores, timing, texts))
                except Exception as exc:  # noqa: BLE001 - this request only
                    out.append(_error(f"classifier failed on this request: {exc!r}", internal=True))
        return out

    def _info(self, what: bytes) -> bytes | str:
        """What an INFO request asks about this version (`taxonomy`: categories and tags)."""
        if what.strip() != b"taxonomy":
            return f"unknown INFO {what[:40]!r}: ask for 'taxonomy'"
        doc = {
            "categories": [
                {"id": c["id"], "name": c["name"], "path": c["path"]} for c in self.model.labels["categories"]
            ],
            "tags": self.model.tag_names,
            # parents under which a result may name a leaf the list above lacks (`"new": true`, id: parent id + slug)
            "named_parents": [
                {"id": self.model.class_id_prefix(p), "path": list(p)}
                for p in sorted(getattr(self.model, "named_parents", None) or {})
            ],
        }
        return json.dumps(doc, ensure_ascii=False).encode()

    def _info_response(self, doc: bytes):
        n_tags = max(1, len(self.model.tag_names))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("CATEGORY_IDS", np.full((1, TOP_K), -1, dtype=np.int32)),
                pb_utils.Tensor("CATEGORY_SCORES", np.zeros((1, TOP_K), dtype=np.float32)),
                pb_utils.Tensor("TAG_SCORES", np.zeros((1, n_tags), dtype=np.float32)),
                pb_utils.Tensor("RESULT", np.array([[doc]], dtype=object)),
                pb_utils.Tensor("TIMING", np.zeros((1, 2), dtype=np.float32)),
            ]
        )

    def _response(self, span: tuple[int, int], scores, timing: list[float], texts: list[str]):
        start, n = span
        cats, tags = scores.probs[start : start + n], scores.tags[start : start + n]
        if not (np.isfinite(cats).all() and np.isfinite(tags).all()):  # e.g. an fp16 overflow in the encoder
            raise ValueError("non-finite scores")
        top = np.empty((n, min(TOP_K, cats.shape[1])), dtype=np.int64)
        results = np.empty((n, 1), dtype=object)
        # the text only to a version whose scoring code names leaves (older versions keep their own code)
        names = bool(getattr(self.model, "named_parents", None))
        for r, (c, t) in enumerate(zip(cats, tags, strict=True)):
            top[r] = self.classifier_mod.top_k(c, TOP_K)
            named = {"text": texts[start + r]} if names else {}
            result = self.model.result(c, t, top=top[r], **named)
            results[r, 0] = json.dumps(result, ensure_ascii=False).encode()
        top_scores = np.take_along_axis(cats, top, axis=1)
        if top.shape[1] < TOP_K:  # a taxonomy with fewer classes: pad with -1 / 0
            pad = TOP_K - top.shape[1]
            top = np.pad(top, ((0, 0), (0, pad)), constant_values=-1)
            top_scores = np.pad(top_scores, ((0, 0), (0, pad)))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("CATEGORY_IDS", top.astype(np.int32)),
                pb_utils.Tensor("CATEGORY_SCORES", top_scores.astype(np.float32)),
                pb_utils.Tensor("TAG_SCORES", tags.astype(np.float32).reshape(n, -1)),
                pb_utils.Tensor("RESULT", results),
                pb_utils.Tensor("TIMING", np.tile(np.asarray(timing, dtype=np.float32), (n, 1))),
            ]
        )

    def finalize(self) -> None:
        self.model = None


def _error(message: str, internal: bool = False):
    code = getattr(pb_utils.TritonError, "INTERNAL" if internal else "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
