"""The listing classifier as served: one file shared by training (which scores with it) and Triton's
`model.py` (which serves with it). Export copies it into every version folder, so a version always runs
the code it was trained and measured with.

What a version folder holds and how a batch is scored:

1. **Text.** `compose_text(title, brand, description)`: each field in Unicode compatibility form (NFKC: a seller's
   "fancy font" — fullwidth `ｓｈｉｒｔ`, mathematical bold `𝐒𝐚𝐦𝐬𝐮𝐧𝐠` — reads as the plain letters the tokenizer
   and the n-grams know), the brand in front when the title lacks it, then the description's first characters,
   HTML tags and entities removed (`plain_text`), after ` | ` (followed by `DESCRIPTION_MARK`, a control character
   the tokenizer drops: it tells the linear part where the description starts). Tokenized with the version's
   `tokenizer/tokenizer.json`.
2. **Encoder engine** → per row: leaf logits [C], tag logits [T], and one logits vector per auxiliary taxonomy
   level. Engines: `torch` (weights.pt, fp32; fp16 on CUDA), `onnx` (model.onnx, fp32), `onnx-int8`
   (model.int8.onnx, dynamically quantized: each batch's activations get one scale, so a row's scores move a
   little with its batch-mates; the fp32 engines give a row the same answer in any batch). The engine is picked
   by the Triton config (`engine` parameter) or the version's own default (`classifier.json`, chosen at export
   by an accuracy bound).
3. **Linear part** (`linear.npz`): TF-IDF word 1-2 + char_wb 2-5 n-grams and linear category and tag scores;
   trained with descriptions, those n-grams read the title (and brand) alone and the description has a block of
   its own (word 1-2 grams), so a long description does not drown the title's n-grams.
4. **Fusion and calibration** (`classifier.json`): category log-score
   `s = α·(log p_leaf + λ·Σ_k log p_level_k(ancestor)) + (1-α)·log softmax(T·linear)`, then probabilities
   `softmax(s/τ)` (τ fitted on the dev split, so confidences mean what they say); tags
   `sigmoid(β·z + (1-β)·T_tag·linear_tag)`.
5. **Hierarchy.** Each level's probability is the sum of its leaves' probabilities; `depth` is the deepest level
   whose probability reaches `depth_threshold` (the path the model is confident in). A row in which the linear
   part finds no n-gram the training data had (a script or symbols it never saw) has no evidence for any class:
   it gets the uniform distribution (confidence 1/C, depth 0: the review queue) and no tags, where the encoder
   alone would answer from its biases with a confident-looking path.
6. **Tags only where they apply** (`tags.json`): the tag models learned where a group (`gender`, `season`, ...)
   applies; a group training found leaking (`gated`) is given only when the predicted category's top level is one
   the group applies to; every tag has its own threshold.
7. **Cascade** (`classifier.json` → `cascade.linear_margin`, chosen at export on the dev split): a row whose
   linear category scores put the best class at least that margin ahead of the second skips the encoder. Its
   category comes from the linear term of the fusion alone (`softmax(s·log softmax(T·linear))`: the encoder
   abstains; `s` is the cascade's `linear_scale`, fitted on the dev rows it skips, else the fusion's `(1-α)/τ`)
   and its tags from the linear tag scores (`sigmoid(T_tag·linear_tag)`). Export keeps a margin only where, on
   dev, it changes (almost) no top-1 class, costs no leaf accuracy or tag F1 and keeps the calibration; with no
   such margin the version has no cascade. The `cascade=False` argument (Triton: config parameter
   `cascade: off`) scores every row with the encoder.
8. **Named leaves** (`classifier.json` → `named_leaves`, found in the training split and kept only where it gains
   leaf accuracy on dev): some taxonomies name a parent's leaves after the listing's brand — every training title
   under `Watches > Wrist Watches` sits in `<its brand> Wrist Watches`, and a new brand gets a new leaf. A class
   list learned from the training titles cannot give a brand it never saw. Under such a parent, when the model's
   leaf is another brand than the one the listing's text starts with, the result names the leaf after the
   listing's brand (`title_brand`, by the rule training chose): the taxonomy's own leaf when it has one, else a new
   one, marked `"new": true`, its id the parent's id + the slug of its name. Its confidence is the parent's
   probability times the rule's precision on dev; the model's own answer leads the alternatives.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

# After the ` | ` that opens the description: the tokenizer's clean-up drops control characters (the encoder sees
# `title | description` exactly as before), and whitespace normalisation removes it from the title and the
# description themselves, so it marks the field boundary unambiguously for the linear part.
DESCRIPTION_MARK = "\x1f"
DESCRIPTION_SEPARATOR = f" |{DESCRIPTION_MARK} "
MAX_TITLE_CHARS = 1000  # longer titles are truncated, not rejected (see the listings.new contract)
MAX_BRAND_CHARS = 100
ENGINES = ("torch", "onnx", "onnx-int8")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
MARKUP = re.compile(r"</?[A-Za-z!][^<>]{0,300}>")  # an HTML tag, as catalogue descriptions often carry them
# an HTML entity with its semicolon (html.unescape alone also reads "&nothing" as "¬hing")
ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
BRAND_RULES = ("first_word", "before_model_number")  # how a named leaf's brand is read from a title
MAX_BRAND_WORDS = 3
DENSE_WEIGHTS_BYTES = 64 << 20  # linear weights up to this size are held dense (faster), larger ones sparse


def plain_text(text: str) -> str:
    """A description without its markup: HTML tags become spaces, entities their characters (`&amp;` → `&`)."""
    if "<" in text:
        text = MARKUP.sub(" ", text)
    return ENTITY.sub(lambda m: html.unescape(m[0]), text) if "&" in text else text


def nfkc(text: str) -> str:
    """`text` in Unicode compatibility form (fullwidth and styled letters, ligatures and the like become the plain
    characters); ASCII, nearly every catalogue title, is returned as it is."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def compose_text(title: str, brand: str | None = None, description: str | None = None, desc_chars: int = 0) -> str:
    """The model's input text."""
    title = " ".join(nfkc(title[:MAX_TITLE_CHARS]).split())
    brand = " ".join(nfkc((brand or "")[:MAX_BRAND_CHARS]).split())
    text = f"{brand} {title}" if brand and brand.lower() not in title.lower() else title
    if desc_chars > 0 and description:
        desc = " ".join(nfkc(plain_text(description[: desc_chars * 4])).split())[:desc_chars]
        if desc:
            text = f"{text}{DESCRIPTION_SEPARATOR}{desc}"
    return text


def fields(text: str) -> tuple[str, str]:
    """A composed text's (brand + title, description); the description is "" when it has none."""
    head, _, desc = text.partition(DESCRIPTION_SEPARATOR)
    return head, desc


def slug(text: str) -> str:
    """The form of a tag value or a category-path element inside ids: `Navy Blue` → `navy-blue`."""
    text = text.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"


def title_brand(head: str, rule: str) -> str:
    """The brand a listing's text (brand + title) starts with, by `rule`: `first_word`, or `before_model_number`:
    the words before its first word with a digit (a model number: `Swiss Trend Artshai1630 …` → `Swiss Trend`), up
    to `MAX_BRAND_WORDS`, and its first word when none of its next `MAX_BRAND_WORDS` words has a digit."""
    words = head.split()
    if not words:
        return ""
    if rule == "before_model_number":
        for k, word in enumerate(words[1 : MAX_BRAND_WORDS + 1], start=1):
            if any(ch.isdigit() for ch in word):
                return " ".join(words[:k])
    return words[0]


def names_brand(head: str, leaf: str, suffix: str) -> bool:
    """Whether `leaf` is `<brand> <suffix>` for a brand that `head` (brand + title) starts with, case aside."""
    h, leaf, suffix = head.lower(), leaf.lower(), suffix.lower()
    if not leaf.endswith(" " + suffix):
        return False
    brand = leaf[: -len(suffix) - 1]
    return h == brand or h.startswith(brand + " ")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the `k` highest scores, highest first, ties to the lower index: what
    `np.argsort(-scores, kind="stable")[:k]` gives, without sorting every class."""
    n = scores.shape[-1]
    if k >= n:
        return np.argsort(-scores, kind="stable")[:k]
    kth = np.partition(scores, n - k)[n - k]  # the k-th highest
    candidates = np.flatnonzero(scores >= kth)  # every score tied with it too, in index order
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


@dataclass
class Outputs:
    """What the encoder engine gives for a batch: leaf logits [n, C], tag logits [n, T], level logits."""

    leaf: np.ndarray
    tags: np.ndarray
    levels: list[np.ndarray]


class Tokenizer:
    """The version's fast tokenizer (the `tokenizers` library: no transformers or torch needed)."""

    def __init__(self, folder: Path, max_len: int) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        self._tok = _Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.enable_truncation(max_len)
        self._tok.no_padding()
        self.pad_id = self._tok.token_to_id("[PAD]") or 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows right-padded to the longest: int64 `input_ids` and `attention_mask` [n, longest]."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = r
        mask[j, : len(r)] = 1
    return ids, mask


def buckets(lengths: Sequence[int], max_rows: int, max_growth: float, min_rows: int = 8) -> list[list[int]]:
    """Row indices grouped for the encoder, shortest first: a bucket is padded to its longest row, so a bucket
    closes when it holds `max_rows` or when the next row is more than `max_growth` times its first row's length
    (once it holds `min_rows`: tiny buckets cost more in calls than they save in padding). Titles are short and
    long-tailed (mean ~13 tokens, a few at the 40-token limit): one bucket of 64 pads most rows 3x."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        last = out[-1] if out else None
        if (
            last is None
            or len(last) >= max_rows
            or (len(last) >= min_rows and lengths[i] > max_growth * lengths[last[0]])
        ):
            out.append([i])
        else:
            last.append(i)
    return out


def sibling(folder: Path, name: str) -> Any:
    """`<folder>/<name>.py` as a module of its own (each version folder runs its own code)."""
    import hashlib
    import importlib.util
    import sys

    key = f"listing_classifier_{name}_{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


class TorchEngine:
    def __init__(self, folder: Path, device: str = "cpu", threads: int = 0) -> None:
        import torch

        network = sibling(folder, "network")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.half = self.device.type == "cuda"
        self.net = network.load(folder)
        self.net.to(self.device)
        if self.half:
            self.net.half()

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> Outputs:
        torch = self.torch
        with torch.inference_mode():
            out = self.net(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        leaf, tags, *levels = (o.float().cpu().numpy() for o in out)
        return Outputs(leaf, tags, levels)


class OnnxEngine:
    def __init__(self, path: Path, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            dev = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": dev}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.providers = self.session.get_providers()

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> Outputs:
        leaf, tags, *levels = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return Outputs(np.asarray(leaf, np.float32), np.asarray(tags, np.float32), [np.asarray(x) for x in levels])


def make_engine(folder: Path, engine: str, device: str = "cpu", threads: int = 0) -> Any:
    if engine == "torch":
        return TorchEngine(folder, device, threads)
    if engine in ONNX_FILES:
        return OnnxEngine(folder / ONNX_FILES[engine], device, threads)
    raise ValueError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")


WORD = re.compile(r"(?u)\b\w\w+\b")
SPACES = re.compile(r"\s\s+")


def word_grams(text: str) -> list[str]:
    """Word 1-2 grams, as scikit-learn's TfidfVectorizer(ngram_range=(1, 2)) makes them."""
    tokens = WORD.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in pairwise(tokens)]


def word_char_grams(word: str, lo: int = 2, hi: int = 5) -> list[str]:
    """One word's character 2-5 grams, padded with a space each side, as TfidfVectorizer(analyzer="char_wb")
    makes them (char_wb n-grams never cross a word: a text's are its words' in turn, see `CharIds`)."""
    out: list[str] = []
    w = f" {word} "
    size = len(w)
    for n in range(lo, hi + 1):
        if n >= size:  # a short word counts once, whole
            out.append(w)
            break
        out.extend([w[i : i + n] for i in range(size - n + 1)])
    return out


def known_ids(vocab: dict[str, int], grams: Callable[[str], list[str]], text: str) -> list[int]:
    """The vocabulary columns of a text's n-grams (unknown ones dropped)."""
    return [j for j in map(vocab.get, grams(text)) if j is not None]


class CharIds:
    """A text's char_wb n-grams as vocabulary columns, word by word through a bounded cache: char_wb n-grams never
    cross a word, and catalogue titles reuse their words (brands, "for", "men", sizes), so most words of a batch
    were seen in an earlier one."""

    MAX_WORD_CHARS = 40  # longer words are scored, not cached: a cached word holds ~4 ids per character

    def __init__(self, vocab: dict[str, int], max_words: int = 50_000) -> None:
        # bounded in words and in word length, so in size (at most ~50,000 x 160 ids, whatever the titles hold)
        self.vocab, self.max_words = vocab, max_words
        self.words: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        out: list[int] = []
        for w in SPACES.sub(" ", text.lower()).split():
            ids = self.words.get(w)
            if ids is None:
                ids = known_ids(self.vocab, word_char_grams, w)
                if len(self.words) < self.max_words and len(w) <= self.MAX_WORD_CHARS:
                    self.words[w] = ids
            out += ids
        return out


class Linear:
    """The linear part: sublinear TF-IDF of word 1-2 and char_wb 2-5 n-grams (each L2-normalised, side by side),
    and sparse linear category / tag weights. Stored as plain arrays in `linear.npz` (no pickle: any NumPy/SciPy
    reads it), the features computed here exactly as scikit-learn computes them at training. A part fitted with
    descriptions (`desc_terms` in the file) reads them in a third block of word 1-2 grams, and its word and char
    blocks read the title alone."""

    def __init__(self, path: Path) -> None:
        from scipy import sparse

        d = np.load(path, allow_pickle=False)
        fielded = "desc_terms" in d
        # (text -> its n-grams' columns, field: 0 title / 1 description / None the whole text, idf, first column)
        self.parts: list[tuple[Callable[[str], list[int]], int | None, np.ndarray, int]] = []
        offset = 0
        for name, field in (("word", 0), ("char", 0), ("desc", 1)):
            if f"{name}_terms" not in d:
                continue
            terms = d[f"{name}_terms"].tolist()
            vocab = {t: i for i, t in enumerate(terms)}
            ids = CharIds(vocab) if name == "char" else partial(known_ids, vocab, word_grams)
            self.parts.append((ids, field if fielded else None, d[f"{name}_idf"], offset))
            offset += len(terms)
        self.n_features = offset

        def csr(prefix: str) -> Any:
            if f"{prefix}_data" not in d:
                return None
            shape = tuple(int(v) for v in d[f"{prefix}_shape"])
            m = sparse.csr_matrix((d[f"{prefix}_data"], d[f"{prefix}_indices"], d[f"{prefix}_indptr"]), shape=shape)
            # a batch times a dense matrix is one pass over the batch's n-grams (the tag weights: 0.17 ms for 64
            # titles against 1.1 sparse x sparse); a big taxonomy's category weights stay sparse
            return m.toarray() if shape[0] * shape[1] * 4 <= DENSE_WEIGHTS_BYTES else m

        self.cat_coef, self.cat_bias = csr("cat"), d["cat_bias"]
        self.tag_coef = csr("tag")
        self.tag_bias = d["tag_bias"] if "tag_bias" in d else None

    def features(self, texts: Sequence[str]) -> Any:
        """The batch's TF-IDF rows [n, n_features] (CSR): per part, sublinear counts x idf, L2-normalised."""
        from scipy import sparse

        n = len(texts)
        rows_out: list[np.ndarray] = []
        cols_out: list[np.ndarray] = []
        data_out: list[np.ndarray] = []
        by_field: dict[int | None, Sequence[str]] = {None: texts}
        if any(p[1] is not None for p in self.parts):
            titles, descriptions = zip(*map(fields, texts), strict=True) if texts else ((), ())
            by_field.update({0: titles, 1: descriptions})
        for ids, field, idf, first in self.parts:
            found: list[int] = []
            row_of: list[int] = []
            for r, text in enumerate(by_field[field]):
                got = ids(text)
                found += got
                row_of += [r] * len(got)
            if not found:
                continue
            size = len(idf)
            pairs = np.asarray(row_of, np.int64) * size + np.asarray(found, np.int64)
            keys, counts = np.unique(pairs, return_counts=True)
            rows, cols = np.divmod(keys, size)
            w = (1.0 + np.log(counts)) * idf[cols]
            w /= np.sqrt(np.bincount(rows, weights=w * w, minlength=n))[rows]
            rows_out.append(rows)
            cols_out.append(cols + first)
            data_out.append(w)
        if not rows_out:
            return sparse.csr_matrix((n, self.n_features), dtype=np.float32)
        return sparse.csr_matrix(
            (np.concatenate(data_out).astype(np.float32), (np.concatenate(rows_out), np.concatenate(cols_out))),
            shape=(n, self.n_features),
        )

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        cats, tags, _ = self.scores(texts)
        return cats, tags

    def scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Category scores [n, C], tag scores [n, T] (or None), and which rows have any known n-gram [n]."""
        x = self.features(texts)
        cats = dense(x @ self.cat_coef) + self.cat_bias
        tags = None
        if self.tag_coef is not None:
            tags = dense(x @ self.tag_coef) + self.tag_bias
        return cats, tags, np.diff(x.indptr) > 0


def dense(product: Any) -> np.ndarray:
    """A batch's scores as a float32 array, from a sparse or a dense product."""
    return np.asarray(product.toarray() if hasattr(product, "toarray") else product, dtype=np.float32)


@dataclass
class Scores:
    """A scored batch: calibrated category probabilities [n, C] and gated tag probabilities [n, T]."""

    probs: np.ndarray
    tags: np.ndarray


@dataclass
class Fused:
    """A batch before its last step (see `Classifier.fuse`): the linear part's category and tag scores, the rows it
    cannot read, the rows the cascade skipped, and the fused category log-scores [n, C] and tag logits [n, T] of the
    rows the encoder scored (zeros in the others)."""

    linear: np.ndarray | None
    linear_tags: np.ndarray | None
    unread: np.ndarray
    skipped: np.ndarray  # the rows the cascade skipped (the encoder scored every other readable row)
    log_scores: np.ndarray
    tag_z: np.ndarray

    @property
    def encoded(self) -> np.ndarray:
        return ~self.skipped & ~self.unread


class Classifier:
    """A model version folder, ready to score batches of listings."""

    def __init__(
        self, folder: str | Path, engine: str = "auto", device: str = "cpu", threads: int = 0, cascade: bool = True
    ) -> None:
        folder = Path(folder)
        self.folder = folder
        self.meta = json.loads((folder / "classifier.json").read_text())
        self.labels = json.loads((folder / "labels.json").read_text())
        self.tag_info = json.loads((folder / "tags.json").read_text())
        self.engine_name = self.meta.get("default_engine", "torch") if engine in ("", "auto") else engine
        self.engine = make_engine(folder, self.engine_name, device, threads)
        self.tokenizer = Tokenizer(folder / "tokenizer", int(self.meta["max_len"]))
        self.linear = Linear(folder / "linear.npz") if (folder / "linear.npz").exists() else None
        # encoder calls: on a CPU many small buckets of similar length (padding is the cost), on a GPU few big
        # ones (the call is the cost)
        self.bucket_rows, self.bucket_growth = (256, 2.0) if device.startswith("cuda") else (32, 1.25)
        cats = self.labels["categories"]
        self.n_classes = len(cats)
        self.paths = [tuple(c["path"]) for c in cats]
        self.depth = max(len(p) for p in self.paths)
        # class -> index of its ancestor at each auxiliary head level
        self.head_levels = [int(k) for k in self.labels.get("head_levels", [])]
        self.ancestors = []
        for k in self.head_levels:
            nodes = {tuple(n): i for i, n in enumerate(self.labels["levels"][str(k)])}
            self.ancestors.append(np.array([nodes[p[:k]] for p in self.paths]))
        # each class's prefix at every level 1..depth, as group ids, for level probabilities
        self.level_groups = []
        for k in range(1, self.depth + 1):
            ids: dict[tuple[str, ...], int] = {}
            self.level_groups.append(np.array([ids.setdefault(p[:k], len(ids)) for p in self.paths]))
        tags = self.tag_info.get("tags", [])
        self.tag_names = tags
        self.tag_thresholds = np.asarray(self.tag_info.get("thresholds", [0.5] * len(tags)), dtype=np.float32)
        groups = self.tag_info.get("groups", {})
        tops = sorted({p[0] for p in self.paths})
        top_index = {t: i for i, t in enumerate(tops)}
        self.top_of_class = np.array([top_index[p[0]] for p in self.paths])
        # allowed[t, top] = tag t may be given to a listing whose predicted top level is `top`: restricted for the
        # groups training gated (a version without `gated`, older, is gated wherever a group does not apply)
        self.allowed = np.ones((len(tags), len(tops)), dtype=bool)
        for j, name in enumerate(tags):
            group = groups.get(name.split(":", 1)[0], {})
            applies = group.get("applies_to")
            if applies is not None and group.get("gated", True):
                self.allowed[j] = [t in set(applies) for t in tops]
        margin = (self.meta.get("cascade") or {}).get("linear_margin")
        self.cascade_margin: float | None = float(margin) if cascade and margin is not None else None
        f = self.meta.get("fusion", {})
        fused_scale = (1 - float(f.get("alpha", 1.0))) / float(f.get("temperature", 1.0))
        self.cascade_scale = float((self.meta.get("cascade") or {}).get("linear_scale") or fused_scale)
        if not self.can_cascade():
            self.cascade_margin = None
        # named leaves (see 8.)
        named = self.meta.get("named_leaves") or {}
        self.name_leaves(
            {tuple(p["path"]): str(p["suffix"]) for p in named.get("parents", [])} if named.get("enabled") else {},
            str(named.get("brand_rule", "first_word")),
            float(named.get("precision", 1.0)),
        )

    def name_leaves(self, parents: dict[tuple[str, ...], str], rule: str, precision: float = 1.0) -> None:
        """Name the leaves under `parents` (parent path -> the suffix its leaves share after the brand) after the
        listing's brand, read by `rule`; a named leaf's confidence is its parent's times `precision` (see 8.)."""
        self.named_parents = parents
        self.brand_rule = rule
        self.named_precision = precision
        # the classes under a named parent by their lower-case path, and each named parent's id (its leaves' ids
        # less their last part)
        self.class_of_path: dict[tuple[str, ...], int] = {}
        self.parent_ids: dict[tuple[str, ...], str] = {}
        for i, c in enumerate(self.labels["categories"]):
            parent = self.paths[i][:-1]
            if parent in parents:
                self.class_of_path[tuple(x.lower() for x in self.paths[i])] = i
                self.parent_ids.setdefault(parent, c["id"].rsplit(".", 1)[0])

    def can_cascade(self) -> bool:
        """A cascade needs a linear part that scores categories in the fusion (and tags, when there are tags)."""
        return (
            self.linear is not None
            and float(self.meta.get("fusion", {}).get("alpha", 1.0)) < 1.0
            and (not self.tag_names or self.linear.tag_coef is not None)
        )

    # ------------------------------------------------------------------ scoring

    def texts(
        self, titles: Sequence[str], brands: Sequence[str | None], descriptions: Sequence[str | None]
    ) -> list[str]:
        chars = int(self.meta.get("description_chars", 0))
        return [compose_text(t, b, d, chars) for t, b, d in zip(titles, brands, descriptions, strict=True)]

    def encode(self, texts: Sequence[str]) -> Outputs:
        """Engine outputs for already composed texts, encoded in buckets of similar token length."""
        n = len(texts)
        ids = self.tokenizer.encode(texts)
        parts: list[tuple[list[int], Outputs]] = []
        for rows in buckets([len(r) for r in ids], self.bucket_rows, self.bucket_growth):
            parts.append((rows, self.engine(*pad([ids[i] for i in rows], self.tokenizer.pad_id))))

        def gather(get: Any) -> np.ndarray:
            first = get(parts[0][1])
            out = np.zeros((n, first.shape[1]), dtype=np.float32)
            for rows, o in parts:
                out[rows] = get(o)
            return out

        levels = [gather(lambda o, k=k: o.levels[k]) for k in range(len(parts[0][1].levels))]
        return Outputs(gather(lambda o: o.leaf), gather(lambda o: o.tags), levels)

    def category_log_scores(self, out: Outputs, linear: np.ndarray | None) -> np.ndarray:
        f = self.meta.get("fusion", {})
        lam = float(f.get("level_weight", 0.0))
        s = log_softmax(out.leaf)
        for anc, logits in zip(self.ancestors, out.levels, strict=True):
            if lam:
                s = s + lam * log_softmax(logits)[:, anc]
        if linear is not None and f.get("alpha", 1.0) < 1.0:
            a = float(f["alpha"])
            s = a * s + (1 - a) * log_softmax(float(f.get("linear_temperature", 1.0)) * linear)
        return s / float(f.get("temperature", 1.0))

    def tag_logits(self, out: Outputs, linear: np.ndarray | None) -> np.ndarray:
        f = self.tag_info.get("fusion", {})
        z = out.tags
        if linear is not None and f.get("beta", 1.0) < 1.0:
            b = float(f["beta"])
            z = b * z + (1 - b) * float(f.get("linear_temperature", 1.0)) * linear
        return z

    def linear_log_scores(self, linear: np.ndarray) -> np.ndarray:
        """The category log-scores of rows the encoder skipped: the fusion's linear term alone, times the cascade's
        own `linear_scale` when export fitted one on dev (else the fusion's `(1-α)/τ`)."""
        f = self.meta.get("fusion", {})
        t = float(f.get("linear_temperature", 1.0))
        return self.cascade_scale * log_softmax(t * linear)

    def linear_tag_logits(self, linear: np.ndarray) -> np.ndarray:
        """The tag logits of rows the encoder skipped: the linear tag scores at their fusion temperature."""
        return float(self.tag_info.get("fusion", {}).get("linear_temperature", 1.0)) * linear

    def easy_rows(self, linear: np.ndarray | None) -> np.ndarray:
        """Rows whose linear category margin (best - second score) reaches the cascade margin."""
        if self.cascade_margin is None or linear is None or linear.shape[1] < 2:
            return np.zeros(0 if linear is None else len(linear), dtype=bool)
        top2 = np.partition(linear, -2, axis=1)[:, -2:]
        return (top2[:, 1] - top2[:, 0]) >= self.cascade_margin

    def fuse(self, texts: Sequence[str]) -> Fused:
        """A batch up to its last step: the linear part's scores, and the encoder's fused scores for every readable
        row the cascade does not skip (all of them with the cascade off)."""
        n, n_tags = len(texts), len(self.tag_names)
        if not n:
            none = np.zeros(0, dtype=bool)
            return Fused(None, None, none, none, np.zeros((0, self.n_classes)), np.zeros((0, n_tags)))
        lin_cat, lin_tag, readable = self.linear.scores(texts) if self.linear is not None else (None, None, None)
        unread = ~readable if readable is not None else np.zeros(n, dtype=bool)
        easy = self.easy_rows(lin_cat)
        if not easy.size:
            easy = np.zeros(n, dtype=bool)
        hard = np.flatnonzero(~easy & ~unread)
        log_scores = np.zeros((n, self.n_classes), np.float64)
        tag_z = np.zeros((n, n_tags), np.float64)
        if len(hard):
            out = self.encode([texts[i] for i in hard])
            log_scores[hard] = self.category_log_scores(out, None if lin_cat is None else lin_cat[hard])
            if n_tags:
                tag_z[hard] = self.tag_logits(out, None if lin_tag is None else lin_tag[hard])
        return Fused(lin_cat, lin_tag, unread, easy, log_scores, tag_z)

    def finish(self, fused: Fused, easy: np.ndarray, in_place: bool = False) -> Scores:
        """The scores of a fused batch in which the rows `easy` take the linear part's answer (the cascade): every
        other readable row must have been encoded. `fused` is left as it was unless `in_place` (its arrays are then
        reused: no copy of [n, C])."""
        n, n_tags = len(fused.unread), len(self.tag_names)
        if not n:
            return Scores(np.zeros((0, self.n_classes), np.float32), np.zeros((0, n_tags), np.float32))
        easy = easy & ~fused.unread if easy.size else np.zeros(n, dtype=bool)
        if not (fused.encoded | easy | fused.unread).all():
            raise ValueError("a readable row is neither encoded nor skipped by the cascade")
        log_scores, tag_z = fused.log_scores, fused.tag_z
        if easy.any():
            assert fused.linear is not None
            if not in_place:
                log_scores, tag_z = log_scores.copy(), tag_z.copy()
            log_scores[easy] = self.linear_log_scores(fused.linear[easy])
            if n_tags and fused.linear_tags is not None:
                tag_z[easy] = self.linear_tag_logits(fused.linear_tags[easy])
        probs = softmax(log_scores).astype(np.float32)
        probs[fused.unread] = 1.0 / self.n_classes  # no evidence for any class (see 5.)
        tags = sigmoid(tag_z) if n_tags else np.zeros((n, 0), np.float32)
        tags[fused.unread] = 0.0
        if self.tag_names:
            # gated by the top class of the float32 probabilities the results are read from (a float64 argmax
            # could pick the other class of a float32 tie)
            top = self.top_of_class[probs.argmax(1)]
            tags = np.where(self.allowed[:, top].T, tags, 0.0)
        return Scores(probs, tags.astype(np.float32))

    def score_texts(self, texts: Sequence[str]) -> Scores:
        fused = self.fuse(texts)
        return self.finish(fused, fused.skipped, in_place=True)

    def score(
        self,
        titles: Sequence[str],
        brands: Sequence[str | None] | None = None,
        descriptions: Sequence[str | None] | None = None,
    ) -> Scores:
        n = len(titles)
        return self.score_texts(self.texts(titles, brands or [None] * n, descriptions or [None] * n))

    # ------------------------------------------------------------------ results

    def level_probs(self, probs: np.ndarray, leaf: int) -> list[float]:
        """The probability of each prefix of class `leaf`'s path (level 1 .. its depth)."""
        out = []
        for k in range(len(self.paths[leaf])):
            groups = self.level_groups[k]
            out.append(float(probs[groups == groups[leaf]].sum()))
        return out

    def given_tags(self, tag_probs: np.ndarray) -> np.ndarray:
        """Which tags a listing is given (bool, the shape of `tag_probs`): at or above their threshold, and not
        zeroed by a gate."""
        return (tag_probs >= self.tag_thresholds) & (tag_probs > 0)

    def class_id_prefix(self, parent: tuple[str, ...]) -> str:
        """The id of a parent path as its leaves' ids start (theirs less their last part)."""
        return self.parent_ids[parent]

    def named_leaf(self, text: str, best: int) -> tuple[str, ...] | int | None:
        """The leaf a listing's own brand names under the parent of class `best` (see 8.): a class index when the
        taxonomy has that leaf, a new path when it does not, None where the rule does not apply (not a named
        parent, or the model's leaf already names the brand the text starts with)."""
        parent = self.paths[best][:-1]
        suffix = self.named_parents.get(parent)
        if suffix is None:
            return None
        head = fields(text)[0]
        if names_brand(head, self.paths[best][-1], suffix):
            return None
        brand = title_brand(head, self.brand_rule)
        if not brand:
            return None
        path = (*parent, f"{brand} {suffix}")
        return self.class_of_path.get(tuple(x.lower() for x in path), path)

    def served_path(self, text: str, best: int) -> tuple[str, ...]:
        """The category path a result gives for class `best` of a row with this composed text: the named leaf
        where the rule applies (see 8.), else the class's own."""
        named = self.named_leaf(text, best) if self.named_parents else None
        if named is None:
            return self.paths[best]
        return self.paths[named] if isinstance(named, int) else named

    def result(
        self,
        probs: np.ndarray,
        tag_probs: np.ndarray,
        k: int = 5,
        top: np.ndarray | None = None,
        text: str | None = None,
    ) -> dict:
        """The RESULT JSON object of one row (the worker's output contract); `top`: its `top_k(probs, k)` when the
        caller has it already; `text`: the row's composed text, for the named leaves (without it, none)."""
        top = top_k(probs, k) if top is None else top
        cats = self.labels["categories"]

        def entry(i: int) -> dict:
            c = cats[int(i)]
            return {"id": c["id"], "name": c["name"], "path": list(c["path"])}

        best = int(top[0])
        levels = self.level_probs(probs, best)
        named = self.named_leaf(text, best) if text is not None and self.named_parents else None
        if named is not None and named != best:
            # the parent is the model's, the leaf the listing's brand: its confidence is the parent's times the
            # rule's precision on dev
            conf = levels[-2] * self.named_precision
            levels = [*levels[:-1], conf]
            if isinstance(named, int):
                category = entry(named)
                others = [int(i) for i in top if int(i) != named][: len(top) - 1]
            else:
                parent_id = self.class_id_prefix(named[:-1])
                category = {"id": f"{parent_id}.{slug(named[-1])}", "name": named[-1], "path": list(named), "new": True}
                others = [int(i) for i in top[:-1]]
            return self._result(category, conf, levels, others, probs, tag_probs, entry)
        return self._result(entry(best), float(probs[best]), levels, [int(i) for i in top[1:]], probs, tag_probs, entry)

    def _result(
        self,
        category: dict,
        confidence: float,
        levels: list[float],
        others: list[int],
        probs: np.ndarray,
        tag_probs: np.ndarray,
        entry: Callable[[int], dict],
    ) -> dict:
        threshold = float(self.meta.get("depth_threshold", 0.5))
        depth = max([i + 1 for i, p in enumerate(levels) if p >= threshold], default=0)
        given = np.flatnonzero(self.given_tags(tag_probs))
        tags = [
            {"tag": self.tag_names[j], "score": round(float(tag_probs[j]), 4)}
            for j in given[np.argsort(-tag_probs[given], kind="stable")]
        ]
        return {
            "category": category,
            "confidence": round(float(confidence), 4),
            "depth": depth,
            "level_confidence": [round(p, 4) for p in levels],
            "alternatives": [{**entry(i), "score": round(float(probs[i]), 4)} for i in others],
            "tags": tags,
        }
