"""The classifier: data/taxonomy/split logic (fast, no stack) and the real Triton model (marked `stack`)."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from training import data, export, serving, tags, taxonomy
from training.artifact import REQUIRED
from training.config import MODEL_NAME, REPO, SERVING_DIR, TrainingSettings

DATA_DIR = TrainingSettings().data_dir
PHONE_CASES = ["Spigen Back Cover for Apple iPhone 6", "Kasemantra Back Cover for Samsung Galaxy J7"]


@pytest.fixture(scope="module")
def prepared() -> data.Prepared:
    return data.prepare(DATA_DIR, seed=13)


# --- data, taxonomy, split ------------------------------------------------------------------------------


def test_no_title_in_two_splits(prepared: data.Prepared) -> None:
    for groups in (prepared.categories, prepared.tags):
        keys = {name: {e.key for e in examples} for name, examples in groups.items()}
        names = list(keys)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert not keys[a] & keys[b], (a, b)
    # the split is a function of the title alone, so it agrees across the two data sets
    cat_dev = {e.key for e in prepared.categories["dev"]}
    assert not cat_dev & {e.key for e in prepared.tags["train"]}
    # de-duplicated: one example per title
    for groups in (prepared.categories, prepared.tags):
        all_keys = [e.key for examples in groups.values() for e in examples]
        assert len(all_keys) == len(set(all_keys))


def test_split_is_seeded_and_proportional(prepared: data.Prepared) -> None:
    n = sum(len(v) for v in prepared.categories.values())
    assert 0.12 < len(prepared.categories["dev"]) / n < 0.18
    keys = [e.key for e in prepared.categories["train"][:500]]
    again = [data.split_of(k, 13, data.FLIPKART_SPLITS) for k in keys]
    assert set(again) == {"train"}
    other_seed = [data.split_of(k, 14, data.FLIPKART_SPLITS) for k in keys]
    assert "dev" in other_seed


def test_tiny_class_policy_merges_into_parent_then_other() -> None:
    paths = (
        [("A", "B", "C")] * 5  # big enough: stays a class
        + [("A", "B", "D")] * 2  # tiny: merged into A > B
        + [("A", "B", "E")] * 1
        + [("A", "F", "G")] * 1  # tiny, and so is A > F: merged into A
        + [("A",)] * 2
        + [("X", "Y", "Z")] * 1  # tiny all the way up: Other
        + [("W",)] * 1
    )
    tax = taxonomy.build(paths, min_count=3)
    cls = {p: tax.classes[tax.index(p)] for p in set(paths)}
    assert cls[("A", "B", "C")] == ("A", "B", "C")
    assert cls[("A", "B", "D")] == cls[("A", "B", "E")] == ("A", "B")
    assert cls[("A", "F", "G")] == ("A",)
    assert cls[("X", "Y", "Z")] == cls[("W",)] == taxonomy.OTHER
    assert set(tax.classes) == {("A", "B", "C"), ("A", "B"), ("A",), taxonomy.OTHER}


def test_real_taxonomy_classes_are_big_enough_and_ids_stable(prepared: data.Prepared) -> None:
    tax = prepared.taxonomy
    counts = np.bincount([e.label for v in prepared.categories.values() for e in v], minlength=len(tax.classes))
    small = [tax.classes[i] for i, c in enumerate(counts) if c < tax.min_count and tax.classes[i] != taxonomy.OTHER]
    assert not small
    assert all(len(p) <= 3 for p in tax.classes)
    js = tax.to_json()["categories"]
    assert len({c["id"] for c in js}) == len(js)
    phone = next(c for c in js if c["path"] == ["Mobiles & Accessories", "Tablet Accessories", "Cases & Covers"])
    assert phone["id"] == "mobiles-and-accessories.tablet-accessories.cases-and-covers"
    assert phone["name"] == "Cases & Covers"


def test_tag_vocabulary(prepared: data.Prepared) -> None:
    row = {"gender": "Men", "baseColour": "Navy Blue", "season": "Summer", "usage": "Smart Casual"}
    assert tags.row_tags(row) == ["gender:men", "colour:navy-blue", "season:summer", "usage:smart-casual"]
    assert tags.row_tags({"gender": "Women", "baseColour": "", "season": " ", "usage": "Casual"}) == [
        "gender:women",
        "usage:casual",
    ]
    assert tags.vocabulary([["a:x", "b:y"], ["a:x"], ["a:x", "a:x"]], min_count=2) == ["a:x"]
    names = prepared.tag_names
    assert names == sorted(names)
    assert {"gender:men", "gender:women", "colour:navy-blue", "season:summer", "usage:casual"} <= set(names)
    assert {n.split(":")[0] for n in names} == {"gender", "colour", "season", "usage"}
    assert "colour:fluorescent-green" not in names  # 5 rows: under the vocabulary's minimum


def test_gpu_config_is_the_cpu_config_on_gpu() -> None:
    cpu = (SERVING_DIR / "config.pbtxt").read_text()
    shipped = (REPO / "deploy" / "triton" / "listing_classifier.gpu.pbtxt").read_text()
    assert shipped == export.gpu_config_text(cpu)
    assert "KIND_GPU" in shipped and "KIND_CPU" not in shipped


def test_export_numbers_versions(tmp_path: Path) -> None:
    art = tmp_path / "artifact"
    art.mkdir()
    for name in REQUIRED:
        if name in ("tokenizer", "encoder"):
            (art / name).mkdir()
            (art / name / "x.json").write_text("{}")
        else:
            (art / name).write_text("{}")
    repo = tmp_path / "repo"
    assert export.export(art, repo) == 1
    assert export.export(art, repo) == 2
    model = repo / MODEL_NAME
    assert (model / "config.pbtxt").exists()
    assert sorted(p.name for p in model.iterdir() if p.is_dir()) == ["1", "2"]
    assert (model / "2" / "model.py").exists() and (model / "2" / "network.py").exists()


# --- the real Triton model --------------------------------------------------------------------------------


def _served_version(local) -> Path:
    version = export.versions(local.model_repository)[-1]
    return local.model_repository / MODEL_NAME / str(version)


def _infer(client, titles: list, brands: list | None = None, priority: int = 0):
    import tritonclient.grpc as grpcclient

    def tensor(name: str, values: list):
        arr = np.array([[v if isinstance(v, bytes) else v.encode()] for v in values], dtype=object)
        t = grpcclient.InferInput(name, list(arr.shape), "BYTES")
        t.set_data_from_numpy(arr)
        return t

    inputs = [tensor("TITLE", titles)] + ([tensor("BRAND", brands)] if brands else [])
    return client.infer(MODEL_NAME, inputs, priority=priority)


def _stats(local) -> dict:
    url = f"http://{local.triton_http}/v2/models/{MODEL_NAME}/stats"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["model_stats"][0]


@pytest.mark.stack
def test_triton_matches_training_predictions_on_dev_titles(local, prepared: data.Prepared) -> None:
    import tritonclient.grpc as grpcclient

    Predictor = serving.network().Predictor

    version_dir = _served_version(local)
    predictor = Predictor(version_dir)  # the training code's own predictor, on the served files
    dev = prepared.categories["dev"][:96]
    titles = [e.text for e in dev] + PHONE_CASES
    client = grpcclient.InferenceServerClient(local.triton_grpc)
    assert client.is_model_ready(MODEL_NAME)
    res = _infer(client, titles)
    assert res.get_response().model_version == version_dir.name
    ids, scores = res.as_numpy("CATEGORY_IDS"), res.as_numpy("CATEGORY_SCORES")
    tag_scores = res.as_numpy("TAG_SCORES")
    assert ids.shape == (len(titles), 5) and ids.dtype == np.int32 and scores.dtype == np.float32
    want_cat, want_tags = predictor.predict(titles)
    assert (ids[:, 0] == want_cat.argmax(1)).all()
    np.testing.assert_allclose(scores[:, 0], want_cat.max(1), atol=1e-4)
    np.testing.assert_allclose(tag_scores, want_tags, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-7).all()  # best first

    results = [json.loads(r[0]) for r in res.as_numpy("RESULT")]
    cats = predictor.labels["categories"]
    for row, result in zip(ids, results, strict=True):
        top = cats[int(row[0])]
        assert result["category"] == {"id": top["id"], "name": top["name"], "path": top["path"]}
        assert [a["id"] for a in result["alternatives"]] == [cats[int(i)]["id"] for i in row[1:]]
        tag_list = [t["score"] for t in result["tags"]]
        assert tag_list == sorted(tag_list, reverse=True)
    # sensible categories: the quick model already gets most top levels of unseen dev titles right
    top_level_hits = np.mean([r["category"]["path"][0] == e.raw_path[0] for r, e in zip(results, dev, strict=False)])
    assert top_level_hits > 0.6, top_level_hits
    for phone in results[-len(PHONE_CASES) :]:
        assert phone["category"]["path"][0] == "Mobiles & Accessories", phone


@pytest.mark.stack
def test_concurrent_requests_are_batched(local, prepared: data.Prepared) -> None:
    import tritonclient.grpc as grpcclient

    titles = [e.text for e in prepared.categories["dev"][:64]]
    before = _stats(local)
    client = grpcclient.InferenceServerClient(local.triton_grpc)
    errors: list[BaseException] = []
    done = threading.Semaphore(0)

    def callback(result, error) -> None:
        if error is not None:
            errors.append(error)
        done.release()

    for t in titles:  # many single-row requests in flight at once
        arr = np.array([[t.encode()]], dtype=object)
        inp = grpcclient.InferInput("TITLE", [1, 1], "BYTES")
        inp.set_data_from_numpy(arr)
        client.async_infer(MODEL_NAME, [inp], callback)
    for _ in titles:
        assert done.acquire(timeout=120)
    assert not errors, errors[:3]
    after = _stats(local)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    print(f"batching: {inferences} inferences in {executions} executions")
    assert inferences == len(titles)
    assert executions < inferences


@pytest.mark.stack
def test_bad_input_gets_a_clear_error_or_a_defined_result(local) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(local.triton_grpc)
    with pytest.raises(InferenceServerException, match="empty or blank"):
        _infer(client, [""])
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        _infer(client, [b"\xff\xfe caf\xe9"])
    # a 50 kB title is truncated, not rejected: same answer as its first 1,000 characters
    long_title = "Back Cover for Samsung Galaxy J7 " * 1600
    assert len(long_title.encode()) > 50_000
    long_res = json.loads(_infer(client, [long_title]).as_numpy("RESULT")[0][0])
    cut_res = json.loads(_infer(client, [long_title[:1000]]).as_numpy("RESULT")[0][0])
    assert long_res == cut_res and 0.0 <= long_res["confidence"] <= 1.0
    # a bad request merged with good ones fails alone
    outcomes: list[object] = []
    lock = threading.Lock()

    def call(title: bytes) -> None:
        try:
            out: object = _infer(client, [title]).as_numpy("RESULT")[0][0]
        except InferenceServerException as exc:
            out = exc
        with lock:
            outcomes.append((title, out))

    threads = [threading.Thread(target=call, args=(t,)) for t in [b"\xc3\x28", *[p.encode() for p in PHONE_CASES] * 4]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for title, out in outcomes:
        assert isinstance(out, InferenceServerException) == (title == b"\xc3\x28"), (title, out)
    assert len(outcomes) == len(threads)
    # the stub survived: the model is still ready and serves, with and without BRAND, at backfill priority
    assert client.is_model_ready(MODEL_NAME)
    ok = _infer(client, PHONE_CASES, brands=["Spigen", "Kasemantra"], priority=2)
    assert ok.as_numpy("RESULT").shape == (2, 1)
