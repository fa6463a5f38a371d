"""The reference every model must beat: TF-IDF word n-grams + LinearSVC, trained and scored in the same run."""

from __future__ import annotations

import time

import numpy as np

from training import metrics
from training.data import Prepared


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)


def run(prep: Prepared, train_cats: list, train_tags: list) -> dict:
    """Category and tag metrics of the baseline on the dev split (same split and examples as the transformer)."""
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    t0 = time.perf_counter()
    classes = prep.taxonomy.classes
    vec = _vectorizer()
    x = vec.fit_transform([e.text for e in train_cats])
    clf = LinearSVC(C=1.0).fit(x, [e.label for e in train_cats])
    dev = prep.categories["dev"]
    pred = clf.predict(vec.transform([e.text for e in dev]))
    out = metrics.category_metrics([e.label for e in dev], [int(p) for p in pred], classes)

    n = len(prep.tag_names)
    tvec = _vectorizer()
    xt = tvec.fit_transform([e.text for e in train_tags])
    y = metrics.multi_hot([e.labels for e in train_tags], n)
    keep = np.flatnonzero(y.sum(0) > 0)  # a tag with no training positive cannot be learnt
    tclf = OneVsRestClassifier(LinearSVC(C=1.0)).fit(xt, y[:, keep])
    tdev = prep.tags["dev"]
    y_pred = np.zeros((len(tdev), n), dtype=np.int8)
    y_pred[:, keep] = (tclf.decision_function(tvec.transform([e.text for e in tdev])) > 0).astype(np.int8)
    out.update(metrics.tag_metrics(metrics.multi_hot([e.labels for e in tdev], n), y_pred))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
