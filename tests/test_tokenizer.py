"""The byte-level BPE: exact round trips, special tokens, the even training sample, errors."""

import inspect
import json
import textwrap

import pytest

from mai_repro.artifacts import project_root
from mai_repro.data import tokenizer as tk
from mai_repro.data.bytelevel import stdlib_sources
from mai_repro.data.corpus import write_clean


@pytest.fixture(scope="module")
def tok():
    # Human-written training text: CPython's standard library (PSF-2.0), shipped with Python.
    return tk.train([text for _, text in stdlib_sources(400_000)], vocab_size=600)


ROUND_TRIP = [
    "",
    "plain ascii text.",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 中文, 日本語, 한국어, עברית, العربية",
    "emoji 🎉👩‍👩‍👧 and combining e\u0301 and zero-width \u200b joiner",
    "whitespace   runs\t\t\tand\n\n\n\r\n  \u00a0 trailing   ",
    "    leading spaces",
    "<|endoftext|>",
    "text <|endoftext|><|pad|> with <|think|>specials<|end_think|> inside <|prompt|><|answer|>",
    "<|endoftext",
    inspect.getsource(json.decoder),
    textwrap.dedent(inspect.getsource(tk.even_budgets)),
    "12345 + 678 = 13023; x1000000, 3.14159, -42, ٣ and ４２ (non-ASCII digits)",
]


@pytest.mark.parametrize("text", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_round_trip_is_exact(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_round_trip_of_the_project_docs(tok):
    for path in [project_root() / "README.md", *sorted((project_root() / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert tok.decode(tok.encode(text)) == text, path.name


@pytest.mark.parametrize("number", ["0", "7", "42", "1000", "13023", "3141592653"])
def test_digits_are_one_token_each_wherever_they_stand(tok, number):
    """A number is spelled digit by digit in every context, so arithmetic sees one notation."""
    digit_ids = [tok.encode(d) for d in "0123456789"]
    assert all(len(ids) == 1 for ids in digit_ids)
    for text in (number, f" {number}", f"x={number}.", f"Answer: {number}\n"):
        pieces = [tok.decode([i]) for i in tok.encode(text)]
        digits = [p.strip() for p in pieces if any(c.isdigit() for c in p)]
        assert digits == list(number), (text, pieces)


def test_special_looking_strings_are_not_special(tok):
    ids = tok.encode("a<|endoftext|>b<|pad|>")
    assert not set(ids) & set(tok.special_ids.values())
    assert tok.decode([tok.eot_id]) == tk.EOT


def test_special_ids(tok):
    assert list(tok.special_ids) == list(tk.SPECIALS)
    assert [tok.eot_id, tok.pad_id, tok.prompt_id, tok.answer_id, tok.think_id,
            tok.end_think_id] == list(range(6))
    assert tok.vocab_size == 600


def test_save_load_same_encoding(tok, tmp_path):
    path = tok.save(tmp_path / "tokenizer.json")
    again = tk.load(path)
    text = inspect.getsource(json.encoder)
    assert again.encode(text) == tok.encode(text)
    assert again.special_ids == tok.special_ids
    assert again.encode("<|endoftext|>") == tok.encode("<|endoftext|>")  # flag survives loading


def test_merges_compress_code(tok):
    text = inspect.getsource(json.scanner)
    assert len(tok.encode(text)) < 0.6 * len(text.encode())


def test_too_small_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="too small.*262"):
        tk.train(["some text"], vocab_size=261)
    with pytest.raises(ValueError, match="too small"):
        tk.train_on_corpus(tmp_path, ["code"], 100, 1000, 2, 0)


def test_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        tk.train_on_corpus(tmp_path, ["code", "math"], 512, 10_000, 2, 0)
    write_clean(tmp_path, "code", [])
    with pytest.raises(ValueError, match="empty"):
        tk.train_on_corpus(tmp_path, ["code", "math"], 512, 10_000, 2, 0)


def test_even_budgets_water_fill():
    assert tk.even_budgets({"a": 10, "b": 100, "c": 100}, 90) == {"a": 10, "b": 40, "c": 40}
    assert tk.even_budgets({"a": 10, "b": 0, "c": 100}, 1000) == {"a": 10, "b": 0, "c": 100}
    assert sum(tk.even_budgets({"a": 7, "b": 50, "c": 51}, 100).values()) == 100


def _stdlib_corpus(dir_):
    # Family by position: a fixture layout of real human-written modules, not a claim about them.
    docs = {f: [] for f in ("code", "stem", "math")}
    for i, (name, text) in enumerate(stdlib_sources(1_000_000)):
        fam = ("code", "stem", "math")[i % 3]
        docs[fam].append({"id": name, "family": fam, "text": text, "source": "cpython",
                          "license": "PSF-2.0"})
    docs["math"] = docs["math"][:2]  # a small family: its unused budget goes to the others
    for fam, recs in docs.items():
        write_clean(dir_, fam, recs)
    return docs


def test_training_sample_is_even_bounded_and_deterministic(tmp_path):
    docs = _stdlib_corpus(tmp_path)
    fams = list(docs)
    texts, budgets = tk.training_sample(tmp_path, fams, 60_000, seed=0)
    size = {f: sum(len(d["text"].encode()) for d in docs[f]) for f in fams}
    assert size["math"] < 20_000 < min(size["code"], size["stem"])  # the fixture's premise
    assert budgets["math"] == size["math"]
    assert budgets["code"] == budgets["stem"] == (60_000 - budgets["math"]) // 2
    sample = list(texts())
    assert sum(len(t.encode()) for t in sample) <= 60_000
    assert sample == list(tk.training_sample(tmp_path, fams, 60_000, seed=0)[0]())
    assert sample != list(tk.training_sample(tmp_path, fams, 60_000, seed=1)[0]())
