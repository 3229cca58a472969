"""Unit tests for stages/prepare.py: normalisation, quality filters, dedup, PII scrubbing, splits, the pipeline."""
from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from lifecycle.core import StageError
from lifecycle.corpus import assign_splits, length_histogram, prepare_corpus
from lifecycle.dedup import exact_duplicates, exact_key, near_duplicates
from lifecycle.params import schema as P
from lifecycle.pii import luhn_valid, scrub_pii
from lifecycle.text import FILTERS, normalize, quality_failure
from tests.conftest import default_params, run_stage, the_error, write_params
from tests.test_collect import prose

# ---------------------------------------------------------------- helpers

_VOCAB = (
    "river mountain forest lantern copper violin harbor meadow thunder pepper saddle glacier orchard "
    "compass ribbon falcon marble canyon velvet anchor bramble cider dune ember fjord garnet hazel iris "
    "juniper kettle lagoon mosaic nectar oyster prairie quartz raven spruce tundra umber vapor willow "
    "yarrow zephyr basalt cobalt dahlia egret fennel gravel heron indigo jasper kelp lichen mango nutmeg "
    "obsidian pollen quill rosemary sorrel thistle urchin vessel walnut"
).split()


def _words(n: int, offset: int = 0) -> list[str]:
    """n distinct words from a fixed vocabulary (a wrap-around slice), so texts are deterministic."""
    return [_VOCAB[(offset + i) % len(_VOCAB)] for i in range(n)]


def _text(n: int, offset: int = 0) -> str:
    return " ".join(_words(n, offset))


def _near_copy(text: str, positions: dict[int, str]) -> str:
    words = text.split()
    for i, word in positions.items():
        words[i] = word
    return " ".join(words)


def _prepare_params(**overrides) -> P.PrepareParams:
    data = {"filters": {"pretrain": {}, "finetune": {}}}
    data.update(overrides)
    return P.PrepareParams.model_validate(data)


# ---------------------------------------------------------------- normalize

def test_normalize_nfkc_folds_ligature():
    assert normalize("\ufb01ne") == "fine"


def test_normalize_nfkc_folds_fullwidth_digits():
    assert normalize("\uff11\uff12\uff13") == "123"


def test_normalize_removes_control_characters():
    assert normalize("a\x00b\x07c\x1fd\x7fe\u200bf\ufeffg") == "abcdefg"


def test_normalize_removes_c1_control_characters():
    assert normalize("a\x80b\x9bc") == "abc"


def test_normalize_collapses_runs_of_spaces_and_tabs():
    assert normalize("a  \t  b\t\tc") == "a b c"


def test_normalize_keeps_single_newlines_and_strips_line_edges():
    assert normalize("a  \n   b") == "a\nb"


def test_normalize_collapses_many_newlines_to_one_blank_line():
    assert normalize("a\n\n\n\n\nb") == "a\n\nb"


def test_normalize_keeps_a_single_blank_line():
    assert normalize("a\n\nb") == "a\n\nb"


def test_normalize_collapses_whitespace_only_lines_into_one_blank_line():
    assert normalize("a\n  \n\t\n\nb") == "a\n\nb"


def test_normalize_converts_carriage_returns_to_newlines():
    assert normalize("a\r\nb\rc") == "a\nb\nc"


def test_normalize_strips_edges():
    assert normalize(" \n\t hello world \n\n ") == "hello world"


def test_normalize_form_none_keeps_ligature():
    assert normalize("\ufb01ne  x", "none") == "\ufb01ne x"


# ---------------------------------------------------------------- quality filters

# (filter, threshold, a text failing only that filter, a text passing it)
QUALITY_CASES = [
    ("min_chars", 20, "short text", "this text is longer than twenty"),
    ("max_chars", 20, "this text is longer than twenty", "short text"),
    ("min_words", 3, "two words", "three words here"),
    ("max_words", 3, "one two three four", "one two"),
    ("min_mean_word_length", 3.0, "a b c to", "three words here"),
    ("max_mean_word_length", 8.0, "supercalifragilistic antidisestablishment", "short words here"),
    ("min_alpha_ratio", 0.5, "123 456 789 ab", "hello world 1"),
    ("min_alpha_word_ratio", 0.5, "123 456 789 word", "word word 123"),
    ("max_symbol_word_ratio", 0.1, "# heading # more # tags here", "plain words without any symbols here"),
    ("max_bullet_line_ratio", 0.5, "- one\n- two\n* three\nplain", "- one\nplain\nplain two\nplain three"),
    ("max_ellipsis_line_ratio", 0.3, "wait...\nand then\u2026\nok", "wait...\nfine\nok\nyes"),
    ("max_repeated_line_ratio", 0.2, "same\nsame\nsame\nother", "a\nb\nc\nd"),
    ("max_repeated_line_char_ratio", 0.2,
     "a long repeated line here\na long repeated line here\nx", "a long unique line\nanother one\nx"),
    ("max_top_bigram_char_ratio", 0.2, "the cat the cat the cat sat", "one two three four five six"),
    ("min_stop_words", 2, "cats sit on mats", "the cat and the dog"),
]


def test_quality_cases_cover_every_filter_field():
    assert sorted(name for name, *_ in QUALITY_CASES) == sorted(P.Filters.model_fields)


def test_filters_steps_follow_the_model_fields():
    assert FILTERS == tuple(P.Filters.model_fields)


@pytest.mark.parametrize("name, threshold, failing, passing", QUALITY_CASES, ids=[c[0] for c in QUALITY_CASES])
def test_quality_filter_rejects_text_failing_it(name, threshold, failing, passing):
    assert quality_failure(failing, P.Filters(**{name: threshold})) == name


@pytest.mark.parametrize("name, threshold, failing, passing", QUALITY_CASES, ids=[c[0] for c in QUALITY_CASES])
def test_quality_filter_accepts_text_passing_it(name, threshold, failing, passing):
    assert quality_failure(passing, P.Filters(**{name: threshold})) is None


@pytest.mark.parametrize("name, threshold, failing, passing", QUALITY_CASES, ids=[c[0] for c in QUALITY_CASES])
def test_quality_failing_text_passes_default_filters(name, threshold, failing, passing):
    # The failing texts fail *because of* the threshold under test, not some default.
    assert quality_failure(failing, P.Filters()) is None


def test_quality_failure_reports_the_first_failing_filter():
    assert quality_failure("hi", P.Filters(min_chars=5, min_words=3)) == "min_chars"


def test_symbol_ratio_counts_ellipses():
    assert quality_failure("wait... what... really... now", P.Filters(max_symbol_word_ratio=0.5)) \
        == "max_symbol_word_ratio"


def test_min_words_drops_short_documents():
    assert quality_failure("too short", P.Filters(min_words=5)) == "min_words"


# ---------------------------------------------------------------- near dedup

def _near(threshold: float) -> P.NearDedup:
    return P.NearDedup(threshold=threshold, num_perm=128, shingle_size=3)


def test_near_duplicates_catches_pair_differing_by_two_words():
    base = _text(120)  # 3-word shingles: Jaccard 0.90, caught with probability 0.999 at threshold 0.7
    near = _near_copy(base, {15: "zzalpha", 45: "zzbeta"})
    assert near != base
    assert near_duplicates([base, near], _near(0.7)) == [1]


def test_near_duplicates_returns_the_later_index():
    base = _text(60)
    other = " ".join(reversed(base.split()))  # same words, no shared shingle
    near = _near_copy(base, {30: "zzgamma"})
    assert near_duplicates([base, other, near], _near(0.7)) == [2]


def test_near_duplicates_keeps_distinct_texts():
    texts = [_text(20, offset=k) for k in (0, 20, 40)] + ["a completely different sentence about nothing"]
    assert near_duplicates(texts, _near(0.7)) == []


def test_near_duplicates_high_threshold_keeps_near_pair():
    base = _text(60)
    near = _near_copy(base, {15: "zzalpha", 45: "zzbeta"})
    assert near_duplicates([base, near], _near(0.95)) == []


def test_near_duplicates_cluster_transitively_and_keep_the_earliest():
    """b is near a and c is near b: one cluster, a is kept (datatrove's rule, whatever order they arrive in)."""
    a = _text(60)
    b = _near_copy(a, {20: "zzone"})
    c = _near_copy(b, {40: "zztwo"})
    assert near_duplicates([a, b, c], _near(0.7)) == [1, 2]
    assert near_duplicates([c, b, a], _near(0.7)) == [1, 2]


def test_exact_duplicates_keep_the_first_of_each_text():
    assert exact_duplicates(["A b", "c", "a  B", "c", "d"]) == [2, 3]


def test_near_dedup_threshold_that_leaves_one_lsh_band_is_rejected_as_a_param():
    params, problems = P.validate({**default_params(), "prepare": {**default_params()["prepare"],
                                   "dedup": {"near": {"threshold": 0.99, "num_perm": 128}}}})
    assert problems == ["params.yaml: prepare.dedup.near: threshold = 0.99 with num_perm = 128 leaves 1 LSH band "
                        "(MinHashLSH needs 2); lower the threshold or raise num_perm"]


# ---------------------------------------------------------------- exact dedup

def test_exact_key_ignores_case_and_whitespace():
    assert exact_key("Hello   World\n") == exact_key("hello world")


def test_exact_key_differs_for_different_text():
    assert exact_key("hello world") != exact_key("hello worlds")


# ---------------------------------------------------------------- PII

def test_scrub_pii_replaces_email():
    assert scrub_pii("mail bob.smith@example.com now", P.Pii()) == ("mail <EMAIL> now", Counter(email=1))


@pytest.mark.parametrize("phone", ["(555) 234-5678", "+44 20 7946 0958"])
def test_scrub_pii_replaces_phone_numbers(phone):
    assert scrub_pii(f"call {phone} today", P.Pii()) == ("call <PHONE> today", Counter(phone=1))


@pytest.mark.parametrize("address", ["192.168.1.20", "2001:db8::ff00:42:8329"])
def test_scrub_pii_replaces_ip_addresses_as_ip(address):
    assert scrub_pii(f"host {address} is up", P.Pii()) == ("host <IP_ADDRESS> is up", Counter(ip=1))


def test_scrub_pii_replaces_luhn_valid_card():
    assert scrub_pii("card 4111 1111 1111 1111 ok", P.Pii()) == ("card <CREDIT_CARD> ok", Counter(credit_card=1))


def test_scrub_pii_keeps_card_number_failing_luhn():
    text, counts = scrub_pii("card 4111 1111 1111 1112 ok", P.Pii())
    assert text == "card 4111 1111 1111 1112 ok"
    assert sum(counts.values()) == 0


@pytest.mark.parametrize("harmless", ["978-1-4129-6580-4", "10:30:45", "1990-2000"])
def test_scrub_pii_keeps_isbn_time_and_year_range(harmless):
    text = f"see {harmless} here"
    assert scrub_pii(text, P.Pii()) == (text, Counter())


def test_scrub_pii_switched_off_kind_is_kept():
    text = "mail bob@example.com or call (555) 234-5678"
    assert scrub_pii(text, P.Pii(email=False)) == ("mail bob@example.com or call <PHONE>", Counter(phone=1))


def test_scrub_pii_ip_switch_covers_ipv6():
    text = "host 2001:db8::ff00:42:8329 and 10.0.0.1"
    assert scrub_pii(text, P.Pii(ip=False)) == (text, Counter())


def test_scrub_pii_counts_each_kind():
    text = ("a@example.com b@example.org call (555) 234-5678 from 10.0.0.1 "
            "pay 4111 1111 1111 1111")
    scrubbed, counts = scrub_pii(text, P.Pii())
    assert counts == Counter(email=2, phone=1, ip=1, credit_card=1)
    assert scrubbed == "<EMAIL> <EMAIL> call <PHONE> from <IP_ADDRESS> pay <CREDIT_CARD>"


@pytest.mark.parametrize("number", ["4111111111111111", "79927398713", "378282246310005", "0"])
def test_luhn_valid_accepts_valid_numbers(number):
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4111111111111112", "79927398710", "378282246310006", "1"])
def test_luhn_valid_rejects_invalid_numbers(number):
    assert not luhn_valid(number)


# ---------------------------------------------------------------- split

def _split(n: int, **split) -> dict[str, list[str]]:
    docs = [{"text": f"document number {i}"} for i in range(n)]
    return {s: [d["text"] for d in ds] for s, ds in assign_splits(docs, P.Split(**split)).items()}


def test_assign_splits_is_deterministic_and_keeps_input_order():
    splits = _split(50, validation=0.1, test=0.1)
    assert splits == _split(50, validation=0.1, test=0.1)
    for texts in splits.values():
        assert texts == sorted(texts, key=lambda t: int(t.split()[-1]))


def test_assign_splits_gives_a_small_corpus_every_split():
    splits = _split(12)
    assert {s: len(ts) for s, ts in splits.items()} == {"train": 10, "validation": 1, "test": 1}
    assert {s: len(ts) for s, ts in _split(12, min_documents=3).items()} == {"train": 6, "validation": 3, "test": 3}
    assert {s: len(ts) for s, ts in _split(3, validation=0.5, test=0.4).items()} == {
        "train": 1, "validation": 1, "test": 1}


def test_assign_splits_honours_fractions_on_a_big_corpus():
    counts = {s: len(ts) for s, ts in _split(2000, validation=0.10, test=0.05).items()}
    assert counts == {"train": 1700, "validation": 200, "test": 100}


def test_assign_splits_moves_at_most_boundary_documents_when_one_is_added():
    before, after = _split(2000), _split(2001)
    where = {t: s for s, ts in before.items() for t in ts}
    moved = [t for s, ts in after.items() for t in ts if t in where and where[t] != s]
    assert len(moved) <= 2


@pytest.mark.parametrize("key", ["validation", "test"])
def test_a_split_share_of_zero_is_a_params_error(key):
    params, problems = P.validate({**default_params(), "prepare": {**default_params()["prepare"],
                                   "split": {"validation": 0.05, "test": 0.05, key: 0.0}}})
    assert problems == [f"params.yaml: prepare.split.{key} = 0.0: must be above 0 and at most 0.5 (pretraining needs "
                        "a validation split, evaluation a test split)"]


# ---------------------------------------------------------------- prepare_corpus

def _corpus() -> list[dict]:
    a = "The quick brown fox jumps over the lazy dog and then runs into the forest to hide."
    b = _text(60)
    return [
        {"id": "a", "text": a, "source": "web"},
        {"id": "b", "text": b, "source": "web"},
        {"id": "short", "text": "too short", "source": "web"},
        {"id": "d", "text": " ".join(reversed(_words(30))) + " and the end", "source": "web"},
        {"id": "a-copy", "text": "  " + a.upper().replace(" ", "   \t "), "source": "books"},
        {"id": "b-near", "text": _near_copy(b, {20: "zzalpha"}), "source": "books"},
        {"id": "email", "text": "Please contact jane.doe@example.com with the details of the order today.",
         "source": "books"},
    ]


def _run_corpus():
    params = _prepare_params(dedup={"near": {"threshold": 0.7, "num_perm": 128, "shingle_size": 3}},
                             split={"validation": 0.3, "test": 0.3})
    return prepare_corpus(_corpus(), P.Filters(min_words=5), params, seed=1)


def test_prepare_corpus_counts_exact_and_near_duplicates():
    _, report = _run_corpus()
    assert report["duplicates_removed"] == {"exact": 1, "near": 1}


def test_prepare_corpus_counts_pii_replacements():
    _, report = _run_corpus()
    assert report["pii_replaced"] == {"email": 1, "phone": 0, "ip": 0, "credit_card": 0}


def test_prepare_corpus_scrubs_pii_in_outputs():
    splits, _ = _run_corpus()
    texts = {d["id"]: d["text"] for docs in splits.values() for d in docs}
    assert "<EMAIL>" in texts["email"]
    assert not any("jane.doe@example.com" in t for t in texts.values())


def test_prepare_corpus_per_source_filter_counts():
    _, report = _run_corpus()
    web, books = report["sources"]["web"], report["sources"]["books"]
    assert (web["filter_min_words"]["documents_in"], web["filter_min_words"]["documents_out"]) == (4, 3)
    assert (books["filter_min_words"]["documents_in"], books["filter_min_words"]["documents_out"]) == (3, 3)
    assert web["filter_min_words"]["characters_in"] - web["filter_min_words"]["characters_out"] == len("too short")


def test_prepare_corpus_per_source_dedup_counts():
    _, report = _run_corpus()
    web, books = report["sources"]["web"], report["sources"]["books"]
    assert (books["dedup_exact"]["documents_in"], books["dedup_exact"]["documents_out"]) == (3, 2)
    assert (books["dedup_near"]["documents_in"], books["dedup_near"]["documents_out"]) == (2, 1)
    assert (web["dedup_exact"]["documents_out"], web["dedup_near"]["documents_out"]) == (3, 3)


def test_prepare_corpus_splits_hold_each_survivor_once():
    splits, report = _run_corpus()
    assert set(splits) == {"train", "validation", "test"}
    ids = [d["id"] for docs in splits.values() for d in docs]
    assert sorted(ids) == ["a", "b", "d", "email"]
    assert (report["documents_in"], report["documents_out"]) == (7, 4)
    assert {s: v["documents"] for s, v in report["split"].items()} == {s: len(ds) for s, ds in splits.items()}


def test_prepare_corpus_normalizes_output_text():
    splits, _ = _run_corpus()
    texts = [d["text"] for docs in splits.values() for d in docs]
    assert all(t == normalize(t) for t in texts)


def test_prepare_corpus_is_deterministic():
    assert _run_corpus() == _run_corpus()


def test_prepare_corpus_does_not_mutate_input():
    docs = _corpus()
    before = copy.deepcopy(docs)
    prepare_corpus(docs, P.Filters(min_words=5), _prepare_params(), seed=1)
    assert docs == before


def test_prepare_corpus_skips_dedup_when_disabled():
    params = _prepare_params(dedup={"exact": False, "near": {"enabled": False}})
    splits, report = prepare_corpus(_corpus(), P.Filters(min_words=5), params, seed=1)
    assert report["duplicates_removed"] == {"exact": 0, "near": 0}
    assert sum(len(ds) for ds in splits.values()) == 6


def test_prepare_corpus_report_lists_every_step_for_a_source_emptied_by_a_filter():
    docs = [{"id": "x", "text": "hi", "source": "tiny"}] + [
        {"id": f"y{i}", "text": f"a perfectly fine document number {i}", "source": "big"} for i in range(3)]
    _, report = prepare_corpus(docs, P.Filters(min_words=3), _prepare_params(), seed=1)
    assert report["sources"]["tiny"].keys() == report["sources"]["big"].keys()


# ---------------------------------------------------------------- length histogram

def _docs(*word_counts: int) -> list[dict]:
    return [{"text": " ".join(["w"] * n)} for n in word_counts]


def test_length_histogram_counts_per_bin():
    splits = {"train": _docs(1, 3, 4), "test": _docs(10)}
    assert length_histogram(splits, [3, 10]) == [{"max_words": 3, "documents": 2},
                                                   {"max_words": 10, "documents": 2}]


def test_length_histogram_adds_last_bin_for_longer_documents():
    splits = {"train": _docs(2, 12), "validation": _docs(25)}
    assert length_histogram(splits, [3, 10]) == [{"max_words": 3, "documents": 1},
                                                  {"max_words": 10, "documents": 0},
                                                  {"max_words": 25, "documents": 2}]


def test_length_histogram_sorts_and_dedups_edges():
    assert length_histogram({"train": _docs(5)}, [10, 3, 3]) == [{"max_words": 3, "documents": 0},
                                                                  {"max_words": 10, "documents": 1}]


def test_length_histogram_empty_splits_give_zero_bins():
    assert length_histogram({"train": []}, [3, 10]) == [{"max_words": 3, "documents": 0},
                                                         {"max_words": 10, "documents": 0}]


@pytest.mark.parametrize("stage, missing", [("prepare", "data/raw/pretrain"),
                                            ("tokenizer", "data/prepared/pretrain/train")])
def test_missing_input_is_one_line(project, stage, missing):
    assert f"error: {missing}: no such file" in the_error(run_stage(stage, project))


# ---------------------------------------------------------------- small corpora, long files and visible drops

def _raw(project, corpus: str, texts: list[str], **extra) -> None:
    (project / f"data/raw/{corpus}").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"s:{i}", "text": t, "source": "s", **extra} for i, t in enumerate(texts)]
    (project / f"data/raw/{corpus}/00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _random_text(words: int, seed: int) -> str:
    import random
    rng = random.Random(seed)
    return " ".join(rng.choice(_VOCAB) for _ in range(words))


def test_a_corpus_too_small_to_split_stops_prepare_with_one_line_before_writing(project):
    params = default_params()
    params["prepare"]["filters"]["pretrain"] = {"max_words": 200}
    write_params(project, params)
    _raw(project, "pretrain", [_random_text(300 if i < 6 else 100, seed=i) for i in range(8)])
    _raw(project, "finetune", [f"a fine review number {i}" for i in range(5)], label="positive")
    assert the_error(run_stage("prepare", project)) == (
        "error: prepare: pretrain: 2 documents left after filters and dedup (of 8 read; filter_max_words dropped 6): "
        "too few for train, validation and test with at least 1 each (prepare.split.min_documents); add text, split "
        "long files with collect.pretrain[].split: chunks, or relax prepare.filters.pretrain.max_words")
    assert not (project / "data/prepared").exists() and not (project / "reports").exists()


def test_too_few_documents_names_dedup_and_min_documents_when_they_are_the_cause():
    docs = [{"id": str(i), "text": "the same text again", "source": "s"} for i in range(5)]
    params = _prepare_params(split={"min_documents": 2})
    with pytest.raises(StageError) as err:
        prepare_corpus(docs, P.Filters(), params, seed=1, corpus="finetune")
    assert str(err.value) == (
        "prepare: finetune: 1 document left after filters and dedup (of 5 read; dedup_exact dropped 4): too few for "
        "train, validation and test with at least 2 each (prepare.split.min_documents); add text, split long files "
        "with collect.finetune[].split: chunks, turn off prepare.dedup.exact, or lower prepare.split.min_documents")


SHORT_REVIEWS = ["Great phone.", "Really loud.", "Works great.", "Nice screen.", "Bad battery."]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A user's project: one 54 KB book (max_chars 5000) and 100 reviews, 5 of them under min_words; collect and
    prepare run."""
    project = tmp_path_factory.mktemp("own-data")
    (project / "data/own").mkdir(parents=True)
    (project / "data/own/book.txt").write_text(prose(150))
    reviews = [f"review {i} of this phone is fine" for i in range(95)]
    for k, short in enumerate(SHORT_REVIEWS):
        reviews.insert(10 * k + 3, short)
    (project / "data/own/reviews.csv").write_text("text,label\n" + "".join(f"{r},positive\n" for r in reviews))
    params = default_params()
    params["collect"]["pretrain"] = [{"name": "mine", "kind": "path", "path": "data/own/book.txt"}]
    params["collect"]["finetune"] = [{"name": "reviews", "kind": "path", "path": "data/own/reviews.csv",
                                      "label_column": "label"}]
    params["prepare"]["filters"]["pretrain"]["max_chars"] = 5000
    write_params(project, params)
    results = {stage: run_stage(stage, project) for stage in ("collect", "prepare")}
    assert all(r.returncode == 0 for r in results.values()), {s: r.stderr for s, r in results.items()}
    return project, results["prepare"]


def _data_report(project) -> dict:
    return json.loads((project / "reports/data.json").read_text())


def test_a_file_larger_than_max_chars_becomes_documents_in_every_split(own_data):
    project, _ = own_data
    pretrain = _data_report(project)["pretrain"]
    assert pretrain["documents_in"] >= 54_000 // 2000
    assert pretrain["documents_out"] >= pretrain["documents_in"] - 1, "at most a short last piece is dropped"
    assert all(pretrain["split"][s]["documents"] >= 1 for s in ("train", "validation", "test"))
    assert pretrain["kept"] == {"mine": {"documents": pretrain["documents_out"],
                                         "characters": sum(s["characters"] for s in pretrain["split"].values())}}


def test_a_filter_dropping_more_than_warn_drop_share_is_one_warning_line(own_data):
    _, result = own_data
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: prepare: finetune source 'reviews': filter_min_words dropped 5.0% (5 of 100 documents), "
        'e.g. "Great phone."; see reports/data.json']


def test_drop_warnings_and_kept_documents_are_in_the_data_report(own_data):
    project, _ = own_data
    finetune = _data_report(project)["finetune"]
    assert finetune["drop_warnings"] == [{"source": "reviews", "filter": "min_words", "dropped": 5, "of": 100,
                                          "share": 0.05, "examples": SHORT_REVIEWS[:3]}]
    assert finetune["kept"]["reviews"]["documents"] == 95 == sum(s["documents"] for s in finetune["split"].values())
    assert _data_report(project)["pretrain"]["drop_warnings"] == []
