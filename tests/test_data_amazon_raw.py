"""Raw Amazon reviews: title cleaning, k-core, windows and the chronological split on a hand-built file
whose expected output is worked out below, and bad input."""

import gzip
import json

import pytest

from riser_lite.data import DataError, Example, load_dataset
from riser_lite.data.amazon_raw import chronological_split, clean_title, prepare_amazon_raw

# --------------------------------------------------------------------------------------------------------
# The hand-built category. Metadata: A, B, C, G, H, I, J usable ("Gizmo &amp; Co" decodes to "Gizmo & Co");
# D has HTML, E no title, F 25 words; A appears twice. Reviews (user: item@time):
#
#   u1: A@1 B@2 C@3 G@10, plus A@1 again (exact duplicate)
#   u2: A@4 B@5 C@6 D@7          u3: B@8 G@9 H@11        u4: E@3 A@12        u5: Z@1 (Z has no metadata)
#   u6: H@13 C@14                u7: I@16 J@17            u8: I@18
#
# Before the core: drop D@7 and E@3 (unusable titles), Z@1 (no metadata), the duplicate A@1 -> 16 left,
# users u1 u2 u3 u4 u6 u7 u8, items A B C G H I J.
# 2-core, round 1: users u4 (1) and u8 (1), item J (1) go -> A@12, I@18, J@17 removed (13 left).
#         round 2: u7 is left with I@16 only and I with one interaction -> both go (12 left). Round 3: stable.
#   -> removed 4 interactions, 3 users (u4 u7 u8), 2 items (I J).
# Items A B C G H get ids 0 1 2 3 4. Windows (history -> target @ time), 12 interactions - 4 users = 8:
#   u1: A->B@2, AB->C@3, ABC->G@10   u2: A->B@5, AB->C@6   u3: B->G@9, BG->H@11   u6: H->C@14
# Sorted by time and cut at int(8 * .8) = 6 and int(8 * .9) = 7: train = the first six, valid = u3 BG->H@11,
# test = u6 H->C@14.
# --------------------------------------------------------------------------------------------------------

META = [
    {"asin": "A", "title": "Alpha Widget"}, {"asin": "B", "title": "Beta Gadget"},
    {"asin": "C", "title": "  Gamma   Tool "}, {"asin": "D", "title": '<span id="x">Delta</span>'},
    {"asin": "E", "brand": "no title here"}, {"asin": "F", "title": " ".join(["word"] * 25)},
    {"asin": "G", "title": "Gizmo &amp; Co"}, {"asin": "H", "title": '"Hotel Item"'},
    {"asin": "I", "title": "India Item"}, {"asin": "J", "title": "Juliet Item"},
    {"asin": "A", "title": "Alpha Widget"},
]
REVIEWS = [("u1", "A", 1), ("u1", "B", 2), ("u1", "C", 3), ("u1", "G", 10), ("u1", "A", 1),
           ("u2", "A", 4), ("u2", "B", 5), ("u2", "C", 6), ("u2", "D", 7),
           ("u3", "B", 8), ("u3", "G", 9), ("u3", "H", 11), ("u4", "E", 3), ("u4", "A", 12), ("u5", "Z", 1),
           ("u6", "H", 13), ("u6", "C", 14), ("u7", "I", 16), ("u7", "J", 17), ("u8", "I", 18)]
EXPECTED = {
    "train": [("u1", (0,), 1, 2), ("u1", (0, 1), 2, 3), ("u2", (0,), 1, 5), ("u2", (0, 1), 2, 6),
              ("u3", (1,), 3, 9), ("u1", (0, 1, 2), 3, 10)],
    "valid": [("u3", (1, 3), 4, 11)],
    "test": [("u6", (4,), 2, 14)],
}


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_2018(root, reviews=None, meta=None, category="Toys"):
    root.mkdir(parents=True, exist_ok=True)
    reviews = reviews if reviews is not None else jsonl(
        {"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 5.0} for u, a, t in REVIEWS)
    (root / f"{category}.json").write_bytes(reviews)
    (root / f"meta_{category}.json").write_bytes(meta if meta is not None else jsonl(META))
    return root


def as_tuples(ds):
    return {s: [(ex.user, ex.history, ex.target, ex.time) for ex in ds.splits[s]] for s in ds.splits}


def test_hand_built_2018_category(tmp_path):
    prepared = prepare_amazon_raw(write_2018(tmp_path / "raw"), k=2)
    ds = prepared.dataset
    assert as_tuples(ds) == EXPECTED
    assert prepared.asin_of == {0: "A", 1: "B", 2: "C", 3: "G", 4: "H"}
    assert ds.catalog == {0: "Alpha Widget", 1: "Beta Gadget", 2: "Gamma Tool", 3: "Gizmo & Co",
                          4: "Hotel Item"}
    assert prepared.version == "2018" and ds.name == "amazon-raw:Toys"
    got = [(r.stage, r.count, r.unit, r.reason) for r in ds.filtered]
    assert got == [
        ("meta_Toys.json", 1, "items", "item dropped: HTML in the title (a tag or an entity such as &nbsp;)"),
        ("meta_Toys.json", 1, "items", "item dropped: no title"),
        ("meta_Toys.json", 1, "items", "item dropped: title longer than 20 words"),
        ("meta_Toys.json", 1, "records", "repeated metadata record for an item (first kept)"),
        ("Toys.json", 1, "interactions", "item has no metadata record"),
        ("Toys.json", 2, "interactions", "item dropped for its title (see the metadata records)"),
        ("Toys.json", 1, "interactions", "exact duplicate (same user, item and time)"),
        ("2-core", 4, "interactions", "interaction of a removed user or item"),
        ("2-core", 3, "users", "user with fewer than 2 interactions (2 rounds of removal)"),
        ("2-core", 2, "items", "item with fewer than 2 interactions (2 rounds of removal)"),
        ("windows", 4, "interactions", "each user's first interaction has no history, so it is never a "
                                       "target (it stays in later histories)"),
    ]


def test_hand_built_2023_gzip_matches(tmp_path):
    """The 2023 release: other field names, parent ASINs, times in milliseconds; gzip by content."""
    root = tmp_path / "raw23"
    root.mkdir()
    reviews = jsonl({"user_id": u, "parent_asin": a, "asin": a + "-child", "timestamp": t * 1000, "rating": 5}
                    for u, a, t in REVIEWS)
    meta = jsonl({("parent_asin" if k == "asin" else k): v for k, v in m.items()} for m in META)
    (root / "Toys.jsonl.gz").write_bytes(gzip.compress(reviews))
    (root / "meta_Toys.jsonl.gz").write_bytes(gzip.compress(meta))
    prepared = prepare_amazon_raw(root, k=2)
    assert prepared.version == "2023" and as_tuples(prepared.dataset) == EXPECTED


def test_max_history_caps_windows_and_min_history_removes(tmp_path):
    ds = load_dataset("amazon-raw", write_2018(tmp_path / "raw"), k=2, max_history=2, min_history=2,
                      require=())  # so few rows leave the valid split empty
    # u1's third window keeps the newest two items (B, C); windows with one history item are removed.
    assert ("u1", (1, 2), 3, 10) in as_tuples(ds)["train"] + as_tuples(ds)["valid"] + as_tuples(ds)["test"]
    removed = [r for r in ds.filtered if "min_history=2" in r.reason]
    assert [(r.stage, r.count) for r in removed] == [("windows", 4)]
    assert sum(len(v) for v in ds.splits.values()) == 4


def test_k5_core_and_time_window(tmp_path):
    with pytest.raises(DataError, match="no interactions left after the 5-core"):
        prepare_amazon_raw(write_2018(tmp_path / "raw"))
    ds = prepare_amazon_raw(write_2018(tmp_path / "raw"), k=2, start=2).dataset
    outside = [r for r in ds.filtered if r.reason.startswith("outside the time window")]
    assert [r.count for r in outside] == [3]  # u1 A@1 twice and u5 Z@1


def test_chronological_split_ties_and_ratios():
    examples = [Example(u, (0,), 1, t) for u, t in [("b", 5.0), ("a", 5.0), ("c", 1.0), ("a", 9.0)]]
    split = chronological_split(examples, (0.5, 0.25, 0.25))
    assert [(e.user, e.time) for e in split["train"]] == [("c", 1.0), ("a", 5.0)]
    assert [(e.user, e.time) for e in split["valid"]] == [("b", 5.0)]
    assert [(e.user, e.time) for e in split["test"]] == [("a", 9.0)]
    with pytest.raises(ValueError, match="summing to 1"):
        chronological_split(examples, (0.5, 0.5, 0.5))


def test_clean_title():
    assert clean_title('  "Quoted  &quot;Name&quot;"  ') == ('Quoted "Name', None)
    assert clean_title("AT&amp;T Phone") == ("AT&T Phone", None)
    assert clean_title("Bag&nbsp;Large")[1].startswith("HTML")
    assert clean_title("<b>Bold</b> thing")[1].startswith("HTML")
    assert clean_title("Size < 5 and > 3") == ("Size < 5 and > 3", None)  # not a tag
    assert clean_title(None) == (None, "no title")
    assert clean_title("x")[1] == "blank or one-character title"
    assert clean_title(" ".join(["w"] * 20)) == (" ".join(["w"] * 20), None)
    assert clean_title(" ".join(["w"] * 21), max_words=20)[1] == "title longer than 20 words"


# --------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------


def _error(tmp_path, **files) -> DataError:
    with pytest.raises(DataError) as info:
        prepare_amazon_raw(write_2018(tmp_path / "bad", **files), k=2)
    return info.value


def test_malformed_review_line(tmp_path):
    reviews = jsonl([{"reviewerID": "u1", "asin": "A", "unixReviewTime": 1}]) + b'{"reviewerID": "u2", \n'
    err = _error(tmp_path, reviews=reviews)
    assert (err.path.name, err.line) == ("Toys.json", 2) and "malformed JSON" in str(err)


def test_missing_or_mistyped_review_fields(tmp_path):
    good = {"reviewerID": "u1", "asin": "A", "unixReviewTime": 1}
    err = _error(tmp_path, reviews=jsonl([good, {"reviewerID": "u2", "asin": "B"}]))
    assert (err.path.name, err.line, err.field) == ("Toys.json", 2, "unixReviewTime")
    assert "missing field" in str(err)
    err = _error(tmp_path, reviews=jsonl([good, {**good, "unixReviewTime": "May 2018"}]))
    assert (err.line, err.field) == (2, "unixReviewTime") and "not a number" in str(err)
    err = _error(tmp_path, reviews=jsonl([good, {**good, "asin": ""}]))
    assert (err.line, err.field) == (2, "asin")


def test_unknown_release(tmp_path):
    err = _error(tmp_path, reviews=jsonl([{"customer": "u1", "product": "A"}]))
    assert (err.path.name, err.line) == ("Toys.json", 1) and "match no known release" in str(err)


def test_non_utf8_metadata(tmp_path):
    meta = jsonl(META[:3]) + b'{"asin": "Q", "title": "Caf\xe9"}\n'
    err = _error(tmp_path, meta=meta)
    assert (err.path.name, err.line) == ("meta_Toys.json", 4) and "not valid UTF-8" in str(err)


def test_metadata_without_item_field(tmp_path):
    err = _error(tmp_path, meta=jsonl([META[0], {"title": "Orphan"}]))
    assert (err.path.name, err.line, err.field) == ("meta_Toys.json", 2, "asin")


def test_file_discovery(tmp_path):
    root = write_2018(tmp_path / "two")
    write_2018(root, category="Books")
    with pytest.raises(DataError, match="exactly one metadata file.*category"):
        prepare_amazon_raw(root, k=2)
    assert prepare_amazon_raw(root, k=2, category="Toys").dataset.name == "amazon-raw:Toys"
    explicit = prepare_amazon_raw(reviews=root / "Toys.json", meta=root / "meta_Toys.json", k=2)
    assert as_tuples(explicit.dataset) == EXPECTED
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="download it first"):
        prepare_amazon_raw(empty)
