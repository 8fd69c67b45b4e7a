"""The model-written passages of data/ai_text/: the positive class of the AI-content detector.

These passages were written by a language model for this project (see data/ai_text/README.md).
They go in exactly three places: the detector's training and evaluation (as "machine" text),
and the planted web records that show curation removing them. Never in a corpus, a shard or
the human side of an evaluation: :class:`PassageGuard` finds them (and near copies) anywhere.

- :func:`load_passages` reads every manifest (``manifest_*.jsonl`` or ``MANIFEST.jsonl``);
- :func:`edited_variants` makes the edits people make when they post such text (Markdown
  stripped, first sentence removed, joined to human text), each labelled with its ``edit``
  and the passage it comes from (``base``), so splits keep a passage and its copies together;
- :func:`plant_records` turns passages into dated web records (WARC) for the raw sample's
  web-like source, at Wikipedia and blog URLs, before and after the knowledge cut-off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

EDITS = ("markdown_stripped", "first_sentence_removed", "joined_to_human")


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    genre: str
    topic: str = ""
    topic_group: str = ""
    date: str = ""
    made_by: str = ""
    edit: str = "none"  # "none" or one of EDITS
    base: str = ""  # the passage an edited variant comes from (its own id when unedited)

    @property
    def words(self) -> int:
        return len(self.text.split())


def default_dir() -> Path:
    from mai_repro.data.sources import default_data_dir

    return default_data_dir() / "ai_text"


def _manifest_rows(folder: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for path in sorted(folder.glob("manifest_*.jsonl")) + sorted(folder.glob("MANIFEST.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[str(row["id"])] = row
    return rows


def load_passages(folder: Path | str | None = None) -> list[Passage]:
    """Every passage with a manifest row and a file, sorted by id. A file without a row is
    skipped (a writer may still be at work); a row without a file is an error."""
    folder = Path(folder) if folder else default_dir()
    out = []
    for pid, row in _manifest_rows(folder).items():
        path = folder / row["path"] if not Path(row["path"]).is_absolute() else Path(row["path"])
        if not path.is_file():
            path = folder / "passages" / row["genre"] / f"{pid}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"data/ai_text manifest row {pid!r}: no file {row['path']}")
        out.append(Passage(pid, path.read_text(encoding="utf-8").strip(), row["genre"],
                           str(row.get("topic", "")), str(row.get("topic_group", "")),
                           str(row.get("date", "")), str(row.get("made_by", "")), "none", pid))
    return sorted(out, key=lambda p: p.id)


def unit_hash(key: str, seed: int = 0) -> float:
    """A deterministic number in [0, 1) per key (splits that depend on nothing else)."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16 ** 12


# --------------------------------------------------------------------------------------------
# Edits people make before posting model-written text.

_MD_RULES = (
    (re.compile(r"^```[^\n]*\n", re.M), ""),  # code fences (keep the code)
    (re.compile(r"^```\s*$", re.M), ""),
    (re.compile(r"^#{1,6}\s+", re.M), ""),  # headings
    (re.compile(r"\*\*([^*\n]+)\*\*"), r"\1"),  # bold
    (re.compile(r"__([^_\n]+)__"), r"\1"),
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?!\w)"), r"\1"),  # italics
    (re.compile(r"`([^`\n]+)`"), r"\1"),  # inline code
    (re.compile(r"^[ \t]*[-*+][ \t]+", re.M), ""),  # bullets
    (re.compile(r"^[ \t]*\d+[.)][ \t]+", re.M), ""),  # numbered lists
    (re.compile(r"\[([^\]\n]+)\]\([^)\n]+\)"), r"\1"),  # links
    (re.compile(r"^[ \t]*>[ \t]?", re.M), ""),  # quotes
    (re.compile(r"^[ \t]*(-{3,}|\*{3,})[ \t]*$", re.M), ""),  # rules
)


def strip_markdown(text: str) -> str:
    """The text as it reads after copying a rendered chat answer: no Markdown syntax."""
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(*#])")


def drop_first_sentence(text: str) -> str:
    """Without its first sentence (or first line, when that comes first): where the
    assistant's opener usually sits."""
    line_end = text.find("\n")
    m = _SENTENCE_END.search(text)
    cut = min(x for x in (m.end() if m else len(text), line_end + 1 if line_end >= 0 else
                          len(text)))
    rest = text[cut:].lstrip()
    return rest or text


def join_with_human(text: str, human: str, seed: int) -> str:
    """The passage with a human paragraph before or after it (a post that quotes or wraps
    model output); the human paragraph is the first of ``human``, at most 120 words."""
    para = next((p for p in re.split(r"\n\s*\n", human) if len(p.split()) >= 20),
                human.strip())
    para = " ".join(para.split()[:120])
    return f"{para}\n\n{text}" if unit_hash(text[:64], seed) < 0.5 else f"{text}\n\n{para}"


def edited_variants(passages: Sequence[Passage], human_texts: Sequence[str], seed: int = 0,
                    share: float = 0.2) -> list[Passage]:
    """About ``share`` of the passages, per edit, get an edited copy (a passage at most one
    edit). ``human_texts`` provide the human paragraphs of "joined_to_human": they must come
    from documents kept out of the human side of any evaluation."""
    out = []
    for p in passages:
        u = unit_hash(p.id, seed + 101)
        k = int(u / share) if u < share * len(EDITS) else None
        if k is None:
            continue
        edit = EDITS[k]
        if edit == "markdown_stripped":
            text = strip_markdown(p.text)
        elif edit == "first_sentence_removed":
            text = drop_first_sentence(p.text)
        else:
            if not human_texts:
                continue
            human = human_texts[int(unit_hash(p.id, seed + 7) * len(human_texts))]
            text = join_with_human(p.text, human, seed)
        if text != p.text:
            out.append(dataclasses.replace(p, id=f"{p.id}~{edit}", text=text, edit=edit,
                                           base=p.id))
    return out


# --------------------------------------------------------------------------------------------
# Planting passages into the web-like sources of the raw sample.

def plant_records(passages: Sequence[Passage], cutoff: str, seed: int = 0
                  ) -> list[tuple[str, str, bytes]]:
    """(URL, ISO date, body) WARC records of the passages, as a crawl would hold them:
    encyclopedic text at Wikipedia-like URLs, the rest at blog and forum URLs; about a
    quarter dated after ``cutoff`` (the cut-off step removes those), the rest dated between
    the first public chat assistants and the cut-off (the AI-content layers must find them)."""
    records = []
    for p in passages:
        u = unit_hash(p.id, seed + 13)
        slug = re.sub(r"[^a-z0-9]+", "-", (p.topic or p.id).lower()).strip("-")[:60] or "page"
        host = "en.wikipedia.org/wiki" if p.genre == "encyclopedic" else \
            ("forum.example.net/t" if p.genre in ("forum_reply", "chat_plain",
                                                  "chat_markdown") else "blog.example.com")
        url = f"https://{host}/{slug}-{p.id.replace('~', '-')}"
        year, month = (2025, 10 + int(u * 12) % 3) if u < 0.25 else \
            (2023 + int(u * 1000) % 3, 1 + int(u * 10000) % 8)
        records.append((url, f"{year}-{month:02d}-15T00:00:00Z", p.text.encode("utf-8")))
    return records


def split_planted(passages: Sequence[Passage], share: float, seed: int = 0
                  ) -> tuple[list[Passage], list[Passage]]:
    """(train, planted): about ``share`` of the passages of each genre are kept for planting
    and never train the detector. The split is by base passage."""
    planted = [p for p in passages if unit_hash(p.base or p.id, seed + 29) < share]
    ids = {p.id for p in planted}
    return [p for p in passages if p.id not in ids], planted


# --------------------------------------------------------------------------------------------
# The guard: no passage (or near copy) may reach a corpus, a shard or the human side.

def _shingles(text: str, n: int) -> set[bytes]:
    words = re.findall(r"\w+", text.lower())
    return {hashlib.blake2b(" ".join(words[i:i + n]).encode(), digest_size=8).digest()
            for i in range(max(0, len(words) - n + 1))}


class PassageGuard:
    """Finds texts that contain most of a data/ai_text passage: the passage itself, an
    edited copy, or the passage inside a longer document (word ``n``-gram containment)."""

    def __init__(self, passages: Iterable[Passage], n: int = 8, containment: float = 0.5):
        self.n, self.containment = n, containment
        self.index: dict[bytes, list[int]] = {}
        self.ids: list[str] = []
        self.sizes: list[int] = []
        for p in passages:
            sh = _shingles(p.text, n)
            if not sh:
                continue
            k = len(self.ids)
            self.ids.append(p.base or p.id)
            self.sizes.append(len(sh))
            for s in sh:
                self.index.setdefault(s, []).append(k)

    def match(self, text: str) -> str | None:
        """The id of a passage of which at least ``containment`` of the n-grams occur in
        ``text`` (an edited copy of a passage keeps most of them), else None."""
        hits: Counter = Counter()
        for s in _shingles(text, self.n):
            for k in self.index.get(s, ()):
                hits[k] += 1
        for k, h in hits.most_common(3):
            if h >= self.containment * self.sizes[k]:
                return self.ids[k]
        return None
