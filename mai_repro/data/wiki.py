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
