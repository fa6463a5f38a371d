"""TF-IDF (word 1-2 + char_wb 2-5 n-grams) + LinearSVC: the reference every model is scored against, and
the linear part the served model fuses with the transformer.

As the reference it is kept honest: the same training rows and input text as the transformer, sklearn's
defaults (C=1), no tuning on the test split; tags are one-vs-rest LinearSVCs with the decision threshold 0.
As the fused part, its weights are stored sparse: coefficients under a cut-off chosen on the dev split
(top-1 agreement with the dense weights ≥ `MIN_PRUNE_AGREEMENT`) are dropped, which makes the file ~10× smaller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import serving

MIN_PRUNE_AGREEMENT = 0.998
DESCRIPTION_MIN_DF = 2
PRUNE_CUTOFFS = (0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.0)


# liblinear's coordinate descent visits rows in a random order: a fixed seed makes each fit the same on every run
# (with the global NumPy state, as before, two runs differed, and fits in parallel threads would race for it)
SVC_SEED = 0


def title_field(text: str) -> str:
    """The brand + title of a composed text, lower-cased (the vectorizers' own preprocessing)."""
    return serving.classifier().fields(text)[0].lower()


def description_field(text: str) -> str:
    return serving.classifier().fields(text)[1].lower()


def has_descriptions(texts: list[str]) -> bool:
    mark = serving.classifier().DESCRIPTION_SEPARATOR
    return any(mark in t for t in texts)


def vectorizer(fielded: bool = False) -> Any:
    """Word 1-2 + char_wb 2-5 n-grams of the whole text; `fielded`: of the title alone, and the description in a
    block of its own (word 1-2 grams seen in at least `DESCRIPTION_MIN_DF` training texts). Measured on a catalogue
    with descriptions (BigBasket, 5,795 titles, 442 leaves; reports/README.md): the linear model over the whole
    text scored 0.671 test leaf accuracy, over the title alone 0.710, fielded 0.718."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    pre = {"preprocessor": title_field} if fielded else {}
    parts = [
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32, **pre)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float32, **pre)),
    ]
    if fielded:
        desc = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            dtype=np.float32,
            min_df=DESCRIPTION_MIN_DF,
            preprocessor=description_field,
        )
        parts.append(("desc", desc))
    return FeatureUnion(parts)


@dataclass
class LinearModel:
    vectorizer: Any
    cat_coef: np.ndarray  # [features, C]
    cat_bias: np.ndarray  # [C]
    tag_coef: np.ndarray | None = None  # [features, T]
    tag_bias: np.ndarray | None = None
    seconds: float = 0.0

    def transform(self, texts: list[str]) -> Any:
        return self.vectorizer.transform(texts)

    def category_scores(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.transform(texts) @ self.cat_coef, dtype=np.float32) + self.cat_bias

    def tag_scores(self, texts: list[str]) -> np.ndarray | None:
        if self.tag_coef is None:
            return None
        return np.asarray(self.transform(texts) @ self.tag_coef, dtype=np.float32) + self.tag_bias


def _svc_weights(clf: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """[features, n_classes] weights and biases of a fitted LinearSVC whose labels are 0..n_classes-1."""
    coef, bias = clf.coef_, clf.intercept_
    if coef.shape[0] == 1 and n_classes == 2:  # binary: sklearn keeps one row
        coef, bias = np.vstack([-coef, coef]), np.array([-bias[0], bias[0]])
    full = np.zeros((coef.shape[1], n_classes), dtype=np.float32)
    full_bias = np.full(n_classes, -10.0, dtype=np.float32)
    full[:, clf.classes_] = coef.T
    full_bias[clf.classes_] = bias
    return full, full_bias


def fit(
    cat_texts: list[str],
    cat_labels: list[int],
    n_classes: int,
    tag_texts: list[str] | None = None,
    tag_targets: np.ndarray | None = None,
    tags_only: bool = False,
    fielded: bool | None = None,
) -> LinearModel:
    """The served linear part: one vectorizer fitted on every training text (categories and tags, so serving
    featurizes once), then the category and tag models. `fielded` None: when the category texts have
    descriptions (see `vectorizer`)."""
    from sklearn.svm import LinearSVC

    t0 = time.perf_counter()
    texts = ([] if tags_only else cat_texts) + (tag_texts or [])
    if fielded is None:
        fielded = has_descriptions(texts)
    vec = vectorizer(fielded)
    try:
        vec.fit(texts)
    except ValueError:  # no description word in two texts: the description block would be empty
        if not fielded:
            raise
        vec = vectorizer(False)
        vec.fit(texts)
    if tags_only:
        model = LinearModel(vec, np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
    else:
        x = vec.transform(cat_texts)
        cat_coef, cat_bias = _svc_weights(LinearSVC(C=1.0, random_state=SVC_SEED).fit(x, cat_labels), n_classes)
        model = LinearModel(vec, cat_coef, cat_bias)
    if tag_texts and tag_targets is not None and tag_targets.shape[1]:
        fit_tags(model, tag_texts, tag_targets)
    model.seconds = round(time.perf_counter() - t0, 1)
    return model


def fit_tags(model: LinearModel, texts: list[str], targets: np.ndarray, mask: np.ndarray | None = None) -> None:
    """The tag models (one-vs-rest LinearSVCs) on `model`'s vectorizer. `mask` [n, T]: a tag learns only from the
    rows whose cell is labelled (None: every row, an unlisted tag being a negative) — so category rows can be the
    negatives of the groups that do not apply to them without being negatives of the others."""
    from sklearn.svm import LinearSVC

    t0 = time.perf_counter()
    x = model.transform(texts)
    n_tags = targets.shape[1]
    coef = np.zeros((x.shape[1], n_tags), dtype=np.float32)
    bias = np.full(n_tags, -10.0, dtype=np.float32)
    for j in range(n_tags):
        rows = np.flatnonzero(mask[:, j] > 0) if mask is not None else np.arange(len(texts))
        y = targets[rows, j]
        if 0 < y.sum() < len(y):
            clf = LinearSVC(C=1.0, random_state=SVC_SEED).fit(x[rows], y)
            coef[:, j], bias[j] = clf.coef_[0], clf.intercept_[0]
    model.tag_coef, model.tag_bias = coef, bias
    model.seconds = round(model.seconds + time.perf_counter() - t0, 1)


@dataclass
class Reference:
    """The baseline exactly as specified: for categories, TF-IDF fitted on the category training titles + LinearSVC;
    for tags, TF-IDF fitted on the tag training titles + one-vs-rest LinearSVCs (decision threshold 0). With
    descriptions it is fitted twice, on the model's input text (title + description) and on the title alone
    (`title_only`): the report scores the model against whichever is stronger on the test split, so reading
    descriptions cannot make the reference weaker than it is without them."""

    categories: LinearModel
    tags: LinearModel | None
    seconds: float
    title_only: LinearModel | None = None

    def category_scores(self, texts: list[str]) -> np.ndarray:
        return self.categories.category_scores(texts)

    def title_only_scores(self, texts: list[str]) -> np.ndarray | None:
        if self.title_only is None:
            return None
        return self.title_only.category_scores(titles_of(texts))

    def tag_scores(self, texts: list[str]) -> np.ndarray | None:
        return self.tags.tag_scores(texts) if self.tags is not None else None


def titles_of(texts: list[str]) -> list[str]:
    """The title field (brand + title) of each composed text."""
    fields = serving.classifier().fields
    return [fields(t)[0] for t in texts]


def fit_reference(
    cat_texts: list[str],
    cat_labels: list[int],
    n_classes: int,
    tag_texts: list[str] | None = None,
    tag_targets: np.ndarray | None = None,
) -> Reference:
    t0 = time.perf_counter()
    cats = fit(cat_texts, cat_labels, n_classes, fielded=False)
    title_only = None
    if has_descriptions(cat_texts):
        title_only = fit(titles_of(cat_texts), cat_labels, n_classes, fielded=False)
    tags = None
    if tag_texts and tag_targets is not None and tag_targets.shape[1]:
        # the tag model's own vectorizer, fitted on the tag titles (the category part of this fit is unused)
        tags = fit(tag_texts, [0] * len(tag_texts), 1, tag_texts, tag_targets, tags_only=True, fielded=False)
    return Reference(cats, tags, round(time.perf_counter() - t0, 1), title_only)


def _prune(w: np.ndarray, cutoff: float) -> Any:
    from scipy import sparse

    kept = np.where(np.abs(w) >= cutoff, w, 0.0).astype(np.float32)
    return sparse.csr_matrix(kept)


def save(model: LinearModel, path: Path, dev_texts: list[str]) -> dict:
    """Write the served form (`linear.npz`: vocabularies, idf, sparse weights; no pickle); returns the cut-off
    used, its dev agreement with the dense weights and the kept share."""
    dense = model.category_scores(dev_texts).argmax(1) if dev_texts else None
    x = model.transform(dev_texts) if dev_texts else None
    chosen = (0.0, 1.0)
    for cutoff in PRUNE_CUTOFFS:
        if x is None:
            break
        w = _prune(model.cat_coef, cutoff)
        agree = float(np.mean(np.asarray((x @ w).toarray() + model.cat_bias).argmax(1) == dense))
        if agree >= MIN_PRUNE_AGREEMENT:
            chosen = (cutoff, agree)
            break
    cutoff, agreement = chosen
    arrays: dict[str, np.ndarray] = {}
    for name, part in model.vectorizer.transformer_list:
        vocab = part.vocabulary_
        terms = sorted(vocab, key=vocab.get)
        arrays[f"{name}_terms"] = np.array(terms, dtype=str)
        arrays[f"{name}_idf"] = part.idf_.astype(np.float64)
    for prefix, coef, bias in (("cat", model.cat_coef, model.cat_bias), ("tag", model.tag_coef, model.tag_bias)):
        if coef is None:
            continue
        w = _prune(coef, cutoff)
        arrays.update(
            {
                f"{prefix}_data": w.data,
                f"{prefix}_indices": w.indices,
                f"{prefix}_indptr": w.indptr,
                f"{prefix}_shape": np.array(w.shape),
                f"{prefix}_bias": bias.astype(np.float32),
            }
        )
    np.savez_compressed(path, **arrays)
    kept = arrays["cat_data"].size / max(1, model.cat_coef.size)
    return {
        "prune_cutoff": cutoff,
        "dev_top1_agreement_with_dense": round(agreement, 5),
        "kept_weights": round(kept, 4),
        "bytes": path.stat().st_size,
    }
