"""The shadow report's arithmetic (pure logic, no stack): which comparisons count, and for which candidate. The
end-to-end shadow run against the real stack is in test_lifecycle."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from stream.events.contract import parse_listing
from stream.pathfmt import short_pair, short_path
from stream.shadow import comparison, summarize


def _listing(item: str, version: int = 1):
    return parse_listing(orjson.dumps({"item_id": item, "title": "a steel mug", "listing_version": version}), None)


def _cand(cat: str, conf: float, path: tuple[str, ...] = ("Kitchen", "Mugs")):
    return SimpleNamespace(category={"id": cat, "path": list(path)}, confidence=conf)


def _live(cat: str, conf: float, version: str) -> dict[str, str]:
    return {
        "category_id": cat,
        "category_path": "Kitchen > Mugs",
        "confidence": str(conf),
        "needs_review": "1" if conf < 0.5 else "0",
        "model_version": version,
        "listing_version": "1",
    }


def _doc(item: str, cand_version: str, cand_cat: str, live: dict[str, str] | None, at: str) -> dict:
    doc = comparison(_listing(item), live, _cand(cand_cat, 0.9), cand_version, 0.5)
    doc["compared_at"] = at
    return doc


def test_a_live_result_of_the_candidate_itself_is_not_a_comparison() -> None:
    doc = comparison(_listing("x"), _live("mugs", 0.9, "5"), _cand("mugs", 0.9), "5", 0.5)
    assert doc["live"] is None and doc["uncompared"] == "same_version" and "agree" not in doc
    doc = comparison(_listing("x"), None, _cand("mugs", 0.9), "5", 0.5)
    assert doc["live"] is None and doc["uncompared"] == "no_live_result"
    doc = comparison(_listing("x"), _live("cups", 0.4, "4"), _cand("mugs", 0.9), "5", 0.5)
    assert doc["live"]["model_version"] == "4" and doc["agree"] is False and doc["review_flip"] is True
    assert "uncompared" not in doc


def test_the_report_keeps_candidates_apart_and_defaults_to_the_newest() -> None:
    records = [
        _doc("a", "5", "mugs", _live("mugs", 0.9, "4"), "2026-12-06T01:00:00.000Z"),
        _doc("b", "5", "mugs", _live("cups", 0.9, "4"), "2026-12-06T01:00:01.000Z"),
        _doc("c", "5", "mugs", _live("mugs", 0.9, "5"), "2026-12-06T01:00:02.000Z"),  # its own result: left out
        _doc("d", "5", "mugs", None, "2026-12-06T01:00:03.000Z"),
        _doc("a", "6", "cups", _live("mugs", 0.9, "4"), "2026-12-06T02:00:00.000Z"),
    ]
    newest = summarize(records)
    assert newest["candidate"] == "6" and newest["events"] == 1 and newest["agreement"] == 0.0
    assert newest["other_candidates"] == {"5": 4}

    five = summarize(records, "5")
    assert five["events"] == 4 and five["compared"] == 2 and five["agreement"] == 0.5
    assert five["uncompared"] == {"same_version": 1, "no_live_result": 1}
    assert five["live_versions"] == {"4": 2} and five["other_candidates"] == {"6": 1}
    assert five["top_flips"] == [{"live": "Kitchen > Mugs", "candidate": "Kitchen > Mugs", "count": 1}]
    assert summarize([])["candidate"] is None


def test_a_long_class_path_keeps_its_deepest_whole_nodes() -> None:
    """The shadow report's flips and the training report's confused classes shorten a path alike: whole when it
    fits, else the deepest whole nodes that fit behind `… > `, else the leaf's last characters."""
    assert short_path("Footwear > Men's Footwear > Casual Shoes", 45) == "Footwear > Men's Footwear > Casual Shoes"
    long = "Home Decor & Festive Needs > Table Decor & Handicrafts > Showpieces"
    assert short_path(long, 45) == "… > Table Decor & Handicrafts > Showpieces"
    assert short_path(long, 20) == "… > Showpieces"
    assert short_path("A > " + "x" * 60, 45) == "…" + "x" * 44
    assert all(len(short_path(long, w)) <= w for w in range(12, 80))
    # a node that would take the text a character or two over the width is left out, not the leaf cut
    near = "Aaaa > " + "b" * 30 + " > " + "c" * 10
    assert short_path(near, 47) == "… > " + "b" * 30 + " > " + "c" * 10
    assert [short_path(near, w) for w in (46, 45, 14, 13)] == ["… > " + "c" * 10] * 3 + ["…" + "c" * 10]


def test_two_paths_that_part_above_what_fits_are_shown_from_where_they_part() -> None:
    car, spare = (
        "Automotive > Car & Bike Accessories > Car Interior & Exterior",
        "Automotive > Accessories & Spare parts > Car Interior & Exterior",
    )
    assert short_path(car, 45) == short_path(spare, 45) == "… > Car Interior & Exterior"
    assert short_pair(car, spare, 45) == (
        "… > Car & Bike Accessories > Car Interior & …",
        "… > Accessories & Spare parts > Car Interior…",
    )
    assert all(len(x) <= 45 for x in short_pair(car, spare, 45))
    # siblings, and paths that fit, keep the ordinary form
    sibling = "Automotive > Car & Bike Accessories > Car Lighting"
    assert short_pair(car, sibling, 45) == (short_path(car, 45), short_path(sibling, 45))
    assert short_pair("A > B", "A > C", 45) == ("A > B", "A > C")
    assert short_pair("X > " + "y" * 50, "Z > " + "y" * 50, 20) == ("X > " + "y" * 15 + "…", "Z > " + "y" * 15 + "…")


def test_a_reviewers_decision_is_not_the_live_models_answer() -> None:
    human = {**_live("cups", 1.0, "4"), "label_source": "human"}
    doc = comparison(_listing("x"), human, _cand("mugs", 0.9), "5", 0.5)
    assert doc["live"] is None and doc["uncompared"] == "human" and "agree" not in doc


def test_two_edits_of_an_item_in_one_batch_are_each_compared_with_their_own_version() -> None:
    """The live results were kept by item alone: an older edit in the same batch took the newer edit's result
    ("lv=1 … live=C2 agree=False")."""
    import asyncio

    from stream.shadow import _live_results

    stored = {"listing:x": {**_live("cups", 0.9, "4"), "listing_version": "2"}}

    class Redis:
        def pipeline(self, transaction: bool = False) -> object:
            asked: list[tuple[str, list[str]]] = []

            class Pipe:
                def hmget(self, key: str, fields: list[str]) -> None:
                    asked.append((key, fields))

                async def execute(self) -> list[list[bytes | None]]:
                    return [[(stored.get(k, {}).get(f) or "").encode() or None for f in fs] for k, fs in asked]

            return Pipe()

    found = asyncio.run(_live_results(Redis(), [_listing("x", 1), _listing("x", 2)]))
    assert set(found) == {("x", 2)}
    docs = [
        comparison(x, found.get((x.item_id, x.listing_version)), _cand("cups", 0.9), "5", 0.5)
        for x in (_listing("x", 1), _listing("x", 2))
    ]
    assert docs[0]["uncompared"] == "no_live_result" and docs[1]["agree"] is True


def test_the_report_leaves_out_records_that_are_not_comparisons(monkeypatch) -> None:
    """A tombstone, bytes that are not JSON or a record without its candidate failed the report with a traceback."""
    from stream import shadow, topics
    from stream.config import Settings

    good = _doc("x", "5", "mugs", _live("mugs", 0.9, "4"), "2026-12-06T10:00:00Z")
    values = [orjson.dumps(good), None, b"not json", b'{"item_id": "y"}', b"[1]"]
    monkeypatch.setattr(topics, "read_all", lambda *_a, **_k: [SimpleNamespace(value=v) for v in values])
    assert shadow.read_shadow(Settings()) == [orjson.loads(orjson.dumps(good))]


def test_a_listing_edit_compared_twice_counts_once_the_newest_comparison() -> None:
    """A shadow run again with --from-beginning compares the same events again: they counted twice."""
    records = [
        _doc("a", "5", "mugs", _live("cups", 0.9, "4"), "2026-12-06T01:00:00.000Z"),
        _doc("b", "5", "mugs", None, "2026-12-06T01:00:01.000Z"),
        # the second run: "b" has a live result now, "a" is compared again
        _doc("a", "5", "mugs", _live("cups", 0.9, "4"), "2026-12-06T02:00:00.000Z"),
        _doc("b", "5", "mugs", _live("mugs", 0.9, "4"), "2026-12-06T02:00:01.000Z"),
    ]
    summary = summarize(records, "5")
    assert (summary["events"], summary["repeated"], summary["compared"]) == (2, 2, 2)
    assert summary["agreement"] == 0.5 and summary["uncompared"] == {}
    assert summary["top_flips"][0]["count"] == 1
