"""Wikipedia as raw markup vs stripped text (notebook 02).

The MAI-Thinking-1 report trains on raw wiki markup instead of the clean rendered text: about
3x more tokens, but the infoboxes (dense structured facts) survive. Here we measure both sides
on real dump pages: the token-cost ratio, and how many infobox facts stay recoverable in each
representation. Parsing is mwparserfromhell's; the "stripped" text is its ``strip_code``,
which drops templates (infoboxes included), as the common wikitext-to-text extractors do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mwparserfromhell

_SPACE = re.compile(r"\s+")
# Infobox parameters that hold layout or media rather than facts.
SKIP_FIELDS = re.compile(r"^(image|img|logo|caption|alt|map|signature|footnotes|width|"
                         r"image_?size|imagesize|pushpin.*|coordinates|coor.*|embed|module.*|"
                         r"label\d*|data\d*|header\d*|below|above|style|.*_style|.*style)$",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Fact:
    page: str
    field: str
    value: str  # plain text of the value, whitespace-normalised


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def strip_markup(wikitext: str) -> str:
    """Plain text as common extractors produce it: templates, tags and link syntax removed."""
    return mwparserfromhell.parse(wikitext).strip_code(normalize=True, collapse=True).strip()


def is_redirect(wikitext: str) -> bool:
    return wikitext.lstrip().upper().startswith("#REDIRECT")


def infobox_facts(title: str, wikitext: str, min_chars: int = 2) -> list[Fact]:
    """(field, value) facts of every ``{{Infobox ...}}`` template on the page.

    Values are rendered to plain text (links keep their label); empty, layout and media
    fields are skipped.
    """
    facts = []
    for tpl in mwparserfromhell.parse(wikitext).filter_templates(recursive=True):
        if not str(tpl.name).strip().lower().startswith("infobox"):
            continue
        for param in tpl.params:
            name = str(param.name).strip()
            if not name or name.isdigit() or SKIP_FIELDS.match(name):
                continue
            value = _SPACE.sub(" ", param.value.strip_code(normalize=True, collapse=True)).strip()
            if len(value) >= min_chars:
                facts.append(Fact(title, name, value))
    return facts


def fact_recoverable(fact: Fact, text: str) -> bool:
    """Is the fact's value present in the text (case and whitespace insensitive)?

    A lenient test for the stripped side: the value appearing anywhere counts, even when the
    field it belongs to can no longer be told.
    """
    return normalise(fact.value) in normalise(text)


def fact_recoverable_with_field(fact: Fact, text: str) -> bool:
    """The field name and its value both present: the structure survives, not only a string."""
    t = normalise(text)
    return normalise(fact.value) in t and normalise(fact.field.replace("_", " ")) in \
        t.replace("_", " ")


def recoverable_by_parsing(facts: list[Fact], representation: str) -> list[bool]:
    """Which facts a parser gets back, field and value, from the representation itself."""
    if not facts:
        return []
    again = {(f.field, f.value) for f in infobox_facts(facts[0].page, representation)}
    return [(f.field, f.value) in again for f in facts]


# --------------------------------------------------------------------------------------------
# The measurement of notebook 02.

@dataclass(frozen=True)
class Page:
    lang: str
    title: str
    wikitext: str


@dataclass
class WikiMeasurement:
    pages: list[dict]  # per page: lang, title, bytes and tokens of each representation
    facts: list[dict]  # per fact: page, field, value, recoverable in each representation
    bytes_ratio: float
    token_ratio: float
    token_ratio_by_lang: dict[str, float]
    retention: dict[str, float]  # share of facts recoverable, by representation and test


def count_tokens_bpe(texts_a: list[str], texts_b: list[str], vocab_size: int
                     ) -> tuple[list[int], list[int]]:
    """Token counts of two representations under one byte-level BPE (the project's trainer)
    trained on both equally, so neither side gets a vocabulary tailored to it."""
    from mai_repro.data.tokenizer import train

    tok = train(texts_a + texts_b, vocab_size)
    return ([len(ids) for ids in tok.encode_batch(texts_a)],
            [len(ids) for ids in tok.encode_batch(texts_b)])


def measure(pages: list[Page], bpe_vocab: int = 8192, progress: bool = True
            ) -> WikiMeasurement:
    """Token cost and infobox-fact retention of raw markup vs stripped text."""
    from tqdm.auto import tqdm

    articles = [p for p in pages if p.wikitext.strip() and not is_redirect(p.wikitext)]
    if not articles:
        raise ValueError("no article pages to measure (all empty or redirects)")
    stripped = [strip_markup(p.wikitext) for p in tqdm(articles, desc="strip markup",
                                                        disable=not progress, leave=False)]
    raw_tokens, text_tokens = count_tokens_bpe([p.wikitext for p in articles], stripped,
                                               bpe_vocab)
    page_rows, fact_rows = [], []
    for p, text, nr, nt in zip(articles, stripped, raw_tokens, text_tokens, strict=True):
        page_rows.append({"lang": p.lang, "title": p.title,
                          "markup_bytes": len(p.wikitext.encode()),
                          "text_bytes": len(text.encode()),
                          "markup_tokens": nr, "text_tokens": nt})
        facts = infobox_facts(p.title, p.wikitext)
        by_parse_raw = recoverable_by_parsing(facts, p.wikitext)
        by_parse_text = recoverable_by_parsing(facts, text)
        for f, pr, pt in zip(facts, by_parse_raw, by_parse_text, strict=True):
            fact_rows.append({
                "lang": p.lang, "page": f.page, "field": f.field, "value": f.value,
                "markup: parsed": pr, "text: parsed": pt,
                "markup: value present": fact_recoverable(f, p.wikitext),
                "text: value present": fact_recoverable(f, text),
                "text: field and value present": fact_recoverable_with_field(f, text),
            })

    def ratio(rows: list[dict], a: str, b: str) -> float:
        return sum(r[a] for r in rows) / max(1, sum(r[b] for r in rows))

    tests = ["markup: parsed", "markup: value present", "text: parsed",
             "text: value present", "text: field and value present"]
    retention = {t: (sum(r[t] for r in fact_rows) / len(fact_rows)) if fact_rows else 0.0
                 for t in tests}
    langs = sorted({r["lang"] for r in page_rows})
    return WikiMeasurement(
        page_rows, fact_rows,
        bytes_ratio=ratio(page_rows, "markup_bytes", "text_bytes"),
        token_ratio=ratio(page_rows, "markup_tokens", "text_tokens"),
        token_ratio_by_lang={lang: ratio([r for r in page_rows if r["lang"] == lang],
                                         "markup_tokens", "text_tokens") for lang in langs},
        retention=retention)


# --------------------------------------------------------------------------------------------
# Stage ``wikipedia`` (notebook 02).

def sample_pages(data_dir: str | None = None, max_pages: int | None = None) -> list[Page]:
    """Article pages of the sample's Wikipedia dumps (English and Bulgarian)."""
    from mai_repro.data.readers import RawItem, read_mediawiki
    from mai_repro.data.sources import SOURCES, raw_path

    pages = []
    for source in SOURCES:
        if source.fmt != "mediawiki":
            continue
        lang = source.file[:2]
        items = [i for i in read_mediawiki(raw_path(data_dir, source)) if isinstance(i, RawItem)]
        items = [i for i in items if i.data.strip() and not is_redirect(i.data.decode())]
        pages += [Page(lang, i.path, i.data.decode()) for i in items[:max_pages]]
    return pages


