"""Features of the supervised AI-text detector, in the style of Ghostbuster (Verma et al., 2024).

Ghostbuster turns the token probabilities of weak language models into a few dozen numbers
per document and feeds them to a linear classifier. Ours come from three cheap sources:

- **the project's own byte models** (the curation detector's observer and performer): mean
  and spread of the per-byte loss, mean entropy, and the zero-shot Binoculars and
  Fast-DetectGPT scores (:func:`byte_features`);
- **word n-gram models of human text** (:class:`NgramModel`, unigram and interpolated trigram
  trained on human reference documents): how likely each word is to a human writer, its mean,
  spread and tails, and how much the trigram context helps (:func:`ngram_features`);
- **style statistics** (:func:`style_features`): sentence-length variation ("burstiness"),
  punctuation and formatting rates, pronouns, word length, vocabulary richness.

All features are rates or means over a text's first ``max_chars`` characters, so long and
short documents are comparable. Higher or lower is not assumed: the classifier learns signs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from mai_repro.data import ai_content as ai
from mai_repro.data import bytelevel as bl

MAX_CHARS = 4000
WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
SENT_RE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")

# --------------------------------------------------------------------------------------------
# Style statistics.

_FIRST = {"i", "me", "my", "mine", "i'm", "i've", "i'd", "i'll"}
_SECOND = {"you", "your", "yours", "you're", "you'll", "you've", "you'd"}
_WE = {"we", "our", "ours", "us", "we're", "we've", "let's"}
_HEDGES = {"may", "might", "can", "could", "often", "typically", "generally", "usually",
           "potentially", "various", "several", "overall", "additionally", "however",
           "ensure", "crucial", "essential", "important", "key", "significant"}

STYLE_NAMES = (
    "log_words", "word_len", "word_len_sd", "ttr_100", "sent_len", "sent_len_cv",
    "comma", "semicolon", "colon", "dash", "paren", "exclaim", "question", "quote",
    "contraction", "digit", "upper", "newline", "bullet_lines", "heading_lines", "bold",
    "para_len_cv", "first_person", "second_person", "we", "hedge", "capital_mid",
)


_CAPITAL_MID = re.compile(r" [A-Z]")
_DIGIT = re.compile(r"\d")
_UPPER = re.compile(r"[A-Z]")


def _cv(x: Sequence[float]) -> float:
    a = np.asarray(x, dtype=float)
    return float(a.std() / a.mean()) if len(a) > 1 and a.mean() > 0 else 0.0


def style_features(text: str, max_chars: int = MAX_CHARS) -> list[float]:
    """The STYLE_NAMES statistics of one text (rates per word or per character)."""
    t = text[:max_chars]
    words = WORD_RE.findall(t)
    n = max(1, len(words))
    lower = [w.lower() for w in words]
    chars = max(1, len(t))
    lens = [len(w) for w in words] or [0]
    sents = [len(WORD_RE.findall(s)) for s in SENT_RE.split(t)]
    sents = [s for s in sents if s > 0] or [0]
    paras = [len(p.split()) for p in re.split(r"\n\s*\n", t) if p.strip()] or [0]
    lines = [ln.strip() for ln in t.splitlines() if ln.strip()]
    n_lines = max(1, len(lines))
    # type-token ratio over windows of 100 words: independent of length (MATTR)
    ttr = [len(set(lower[i:i + 100])) / 100 for i in range(0, max(1, len(lower) - 99), 50)] \
        if len(lower) >= 100 else [len(set(lower)) / n]
    capital_mid = len(_CAPITAL_MID.findall(t))
    return [
        math.log1p(len(words)), float(np.mean(lens)), float(np.std(lens)), float(np.mean(ttr)),
        float(np.mean(sents)), _cv(sents),
        t.count(",") / n, t.count(";") / n, t.count(":") / n,
        (t.count("\u2014") + t.count("\u2013") + t.count(" - ")) / n,
        t.count("(") / n, t.count("!") / n, t.count("?") / n,
        (t.count('"') + t.count("\u201c") + t.count("\u201d")) / n,
        sum("'" in w for w in words) / n, len(_DIGIT.findall(t)) / chars,
        len(_UPPER.findall(t)) / chars, t.count("\n") / n,
        sum(bool(re.match(r"([-*+\u2022]|\d+[.)])\s", ln)) for ln in lines) / n_lines,
        sum(ln.startswith("#") or (ln.startswith("**") and ln.endswith("**"))
            for ln in lines) / n_lines,
        t.count("**") / n, _cv(paras),
        sum(w in _FIRST for w in lower) / n, sum(w in _SECOND for w in lower) / n,
        sum(w in _WE for w in lower) / n, sum(w in _HEDGES for w in lower) / n,
        capital_mid / n,
    ]


# --------------------------------------------------------------------------------------------
# Word n-gram models of human text.

def words_of(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    return [w.lower() for w in WORD_RE.findall(text[:max_chars])]


class NgramModel:
    """Word unigram (add-one) and interpolated trigram probabilities from human text.

    Counts live in sorted numpy arrays of packed keys (three 20-bit word ids), so a
    trigram model of a million words costs a few MB and scores a text with a searchsorted.
    """

    LAMBDAS = (0.5, 0.3, 0.2)  # trigram, bigram, unigram weights

    def __init__(self, texts: Sequence[str], max_vocab: int = 200_000):
        counts: dict[str, int] = {}
        docs = [words_of(t) for t in texts]
        for ws in docs:
            for w in ws:
                counts[w] = counts.get(w, 0) + 1
        vocab = sorted(counts, key=lambda w: (-counts[w], w))[: max_vocab]
        self.vocab = {w: i + 1 for i, w in enumerate(vocab)}  # 0 = unknown word
        self.uni = np.ones(len(vocab) + 1)  # add-one
        for w, i in self.vocab.items():
            self.uni[i] += counts[w]
        self.uni_logp = np.log(self.uni / self.uni.sum())
        ids = [self.ids(ws) for ws in docs]
        self.bi_keys, self.bi_counts = self._count(ids, 2)
        self.tri_keys, self.tri_counts = self._count(ids, 3)
        self.ctx1_keys, self.ctx1_counts = self._count(ids, 1, drop_last=True)
        self.ctx2_keys, self.ctx2_counts = self._count(ids, 2, drop_last=True)

    def ids(self, ws: Sequence[str]) -> np.ndarray:
        return np.array([self.vocab.get(w, 0) for w in ws], dtype=np.int64)

    @staticmethod
    def _keys(ids: np.ndarray, n: int) -> np.ndarray:
        key = np.zeros(max(0, len(ids) - n + 1), dtype=np.int64)
        for j in range(n):
            key = (key << 20) | ids[j:len(ids) - n + 1 + j]
        return key

    @classmethod
    def _count(cls, docs: Sequence[np.ndarray], n: int, drop_last: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        parts = [cls._keys(d[:-1] if drop_last else d, n) for d in docs]
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.unique(keys, return_counts=True)

    @staticmethod
    def _lookup(keys: np.ndarray, counts: np.ndarray, q: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return np.zeros(len(q))
        i = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        return np.where(keys[i] == q, counts[i], 0).astype(float)

    def token_logps(self, ws: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-word log-probabilities (unigram, trigram) of words 3.. of ``ws``."""
        ids = self.ids(ws)
        if len(ids) < 3:
            return np.zeros(0), np.zeros(0)
        w, v = ids[2:], ids[1:-1]
        p_uni = np.exp(self.uni_logp[w])
        c_bi = self._lookup(self.bi_keys, self.bi_counts, self._keys(ids[1:], 2))
        c_v = self._lookup(self.ctx1_keys, self.ctx1_counts, v)
        c_tri = self._lookup(self.tri_keys, self.tri_counts, self._keys(ids, 3))
        c_uv = self._lookup(self.ctx2_keys, self.ctx2_counts, self._keys(ids[:-1], 2))
        l3, l2, l1 = self.LAMBDAS
        p_bi = np.where(c_v > 0, c_bi / np.maximum(c_v, 1), 0.0)
        p_tri = np.where(c_uv > 0, c_tri / np.maximum(c_uv, 1), 0.0)
        return np.log(p_uni), np.log(l3 * p_tri + l2 * p_bi + l1 * p_uni)


NGRAM_NAMES = ("uni_mean", "uni_sd", "uni_p10", "uni_p90", "tri_mean", "tri_sd", "tri_p10",
               "tri_p90", "tri_minus_uni", "oov")


def ngram_features(model: NgramModel, text: str) -> list[float]:
    ws = words_of(text)
    uni, tri = model.token_logps(ws)
    if len(uni) == 0:
        return [0.0] * len(NGRAM_NAMES)
    oov = float(np.mean(model.ids(ws) == 0))
    return [float(uni.mean()), float(uni.std()), float(np.percentile(uni, 10)),
            float(np.percentile(uni, 90)), float(tri.mean()), float(tri.std()),
            float(np.percentile(tri, 10)), float(np.percentile(tri, 90)),
            float(tri.mean() - uni.mean()), oov]


# --------------------------------------------------------------------------------------------
# The project's own byte models.

BYTE_NAMES = ("binoculars", "fast_detect", "byte_nll", "byte_nll_sd", "byte_entropy",
              "byte_nll_minus_entropy")


@torch.no_grad()
def byte_features(models, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """(N, len(BYTE_NAMES)) from a ``detector.DetectorModels`` over each text's first
    ``score_bytes`` bytes (windows as in ``DetectorModels.sums``)."""
    import torch.nn.functional as F

    from mai_repro.model.transformer import split_output

    s = models.settings
    models.observer.eval()
    models.performer.eval()
    items = [(i, ids, start) for i, t in enumerate(texts)
             for ids, start in bl.windows(t.encode("utf-8", "replace")[: s.score_bytes],
                                          s.seq_len, s.prompt_len, s.prompt_len - 1)]
    sums = torch.zeros(len(texts), len(ai.SUMS) + 2, dtype=torch.float64)
    for j in range(0, len(items), batch_size):
        chunk = items[j:j + batch_size]
        ids, mask = bl.pad_batch([x for _, x, _ in chunk])
        m = mask[:, 1:].clone()
        for row, (_, _, start) in enumerate(chunk):
            m[row, :start] = False
        obs, _ = split_output(models.observer(ids[:, :-1]))
        perf, _ = split_output(models.performer(ids[:, :-1]))
        base = ai.token_sums(obs, perf, ids[:, 1:], m).double()
        logq = F.log_softmax(perf.float(), -1)
        nll = -logq.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        ent = -(logq.exp() * logq).sum(-1)
        mf = m.float()
        extra = torch.stack([(nll.square() * mf).sum(-1), (ent * mf).sum(-1)], -1).double()
        sums.index_add_(0, torch.tensor([i for i, _, _ in chunk]), torch.cat([base, extra], -1))
    s_np = sums.numpy()
    n = np.maximum(s_np[:, 3], 1.0)
    nll_mean = s_np[:, 0] / n
    nll_sd = np.sqrt(np.maximum(s_np[:, 4] / n - nll_mean ** 2, 0.0))
    ent_mean = s_np[:, 5] / n
    return np.stack([ai.scores_from_sums(s_np[:, :4], "binoculars"),
                     ai.scores_from_sums(s_np[:, :4], "fast_detect"),
                     nll_mean, nll_sd, ent_mean, nll_mean - ent_mean], 1)


# --------------------------------------------------------------------------------------------

def text_features(texts: Sequence[str], ngram: NgramModel | None, byte_models=None,
                  progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """The feature matrix of ``texts`` and its column names: style, then n-gram (if a
    model is given), then byte-model features (if models are given)."""
    from tqdm.auto import tqdm

    names = list(STYLE_NAMES)
    rows = [style_features(t) for t in tqdm(texts, desc="style features", disable=not progress,
                                            leave=False)]
    x = np.asarray(rows, dtype=float).reshape(len(texts), len(STYLE_NAMES))
    if ngram is not None:
        names += NGRAM_NAMES
        g = np.asarray([ngram_features(ngram, t) for t in texts], dtype=float)
        x = np.concatenate([x, g.reshape(len(texts), len(NGRAM_NAMES))], 1)
    if byte_models is not None:
        names += BYTE_NAMES
        x = np.concatenate([x, byte_features(byte_models, texts).reshape(len(texts), -1)], 1)
    return x, names
