"""Serve-time guardrails on stored page items: one check per page, failing closed."""

from __future__ import annotations

from typing import Any

from features.profile import ProfileMeta
from online_models.rules import Rules
from serving.home import guard_rows, item_allowed


def _item(tid: str, rating: Any = "PG", genres: Any = ("Comedy",), avail: Any = None
          ) -> dict[str, Any]:
    item: dict[str, Any] = {"title_id": tid, "maturity_rating": rating, "genres": list(genres)}
    if avail is not None:
        item["availability"] = avail
    return item


ROWS = [
    {"row_id": "a", "items": [_item("ok"), _item("mature", "R"), _item("scary", "PG", ["Horror"]),
                              _item("fr-only", avail=["FR"]), _item("blocked")]},
    {"row_id": "b", "items": [_item("no-rating", None), {"title_id": "no-key"},
                              _item("odd-rating", "XYZ"), _item("fine")]},
    {"row_id": "c", "items": [_item("R-only", "R")]},
]


def _ids(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[it["title_id"] for it in r["items"]] for r in rows]


def test_a_kids_profile_in_the_us_keeps_only_what_every_rule_allows() -> None:
    rules = Rules(blocked_titles=["blocked"], enforce_availability=True)
    kids = ProfileMeta(kids=True)
    assert _ids(guard_rows(ROWS, rules, kids, "US")) == [["ok"], ["fine"]]
    # the row with nothing left is dropped; the input is not changed
    assert len(ROWS[0]["items"]) == 5


def test_an_adult_profile_keeps_mature_and_horror_titles_but_not_malformed_items() -> None:
    rules = Rules(default_max_rating="R", enforce_availability=True)
    adult = ProfileMeta()
    assert _ids(guard_rows(ROWS, rules, adult, "FR")) == [
        ["ok", "mature", "scary", "fr-only", "blocked"], ["fine"], ["R-only"]]
    # without a country availability is not checked; in the US the FR-only title goes
    assert "fr-only" in _ids(guard_rows(ROWS, rules, adult, None))[0]
    assert "fr-only" not in _ids(guard_rows(ROWS, rules, adult, "US"))[0]


def test_the_per_page_check_agrees_with_the_per_item_one() -> None:
    rules = Rules(blocked_titles=["blocked"], enforce_availability=True)
    for meta in (ProfileMeta(), ProfileMeta(kids=True), ProfileMeta(max_rating="PG")):
        for country in (None, "US", "FR", "ZZ"):
            expected = [[it["title_id"] for it in r["items"]
                         if item_allowed(rules, it, meta, country)] for r in ROWS]
            assert _ids(guard_rows(ROWS, rules, meta, country)) == [e for e in expected if e]
