"""The AI-content detector's byte-level models as curation saves and uses them: settings, the
observer/performer pair and their scores, saving and loading, and scoring files with a run's
saved detector (the ``score`` command of ``mai_repro.data.ai_content``).

Everything here needs only the model layer; training the models and measuring them lives in
:mod:`mai_repro.eval.detector`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mai_repro.data import ai_content as ai
from mai_repro.data import bytelevel as bl
from mai_repro.data.ai_content import marker_hits
from mai_repro.files import atomic_write
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import split_output


@dataclass(frozen=True)
class DetectorSettings:
    seq_len: int = 256
    prompt_len: int = 32  # bytes of human prompt; also the context kept between windows
    score_bytes: int = 512
    d_model: int = 128
    n_layers: int = 2
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    score: str = "binoculars"
    fpr: float = 0.01
    temperature: float = 0.7
    top_p: float = 0.9
    # the generator's harder decodings, reported next to the headline: (temperature, top_p)
    hard_decodings: tuple[tuple[float, float], ...] = ((1.0, 0.97), (1.0, 1.0))
    seed: int = 0

@dataclass
class DetectorModels:
    observer: torch.nn.Module
    performer: torch.nn.Module
    settings: DetectorSettings
    losses: dict[str, list[float]] = field(default_factory=dict)

    @torch.no_grad()
    def sums(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(N, 4) ``ai.token_sums`` per text over its bytes ``prompt_len - 1`` to
        ``score_bytes``, scored in windows of ``seq_len`` that overlap by ``prompt_len``
        bytes. The first bytes are context only: in the evaluation they are the human prompt
        both classes share, so scoring them would only add noise."""
        s = self.settings
        self.observer.eval()
        self.performer.eval()
        items = [(i, ids, start) for i, t in enumerate(texts)
                 for ids, start in bl.windows(t.encode("utf-8", "replace")[: s.score_bytes],
                                              s.seq_len, s.prompt_len, s.prompt_len - 1)]
        out = torch.zeros(len(texts), len(ai.SUMS), dtype=torch.float64)
        for j in range(0, len(items), batch_size):
            chunk = items[j:j + batch_size]
            ids, mask = bl.pad_batch([ids for _, ids, _ in chunk])
            m = mask[:, 1:].clone()
            for row, (_, _, start) in enumerate(chunk):
                m[row, :start] = False
            obs, _ = split_output(self.observer(ids[:, :-1]))
            perf, _ = split_output(self.performer(ids[:, :-1]))
            sums = ai.token_sums(obs, perf, ids[:, 1:], m).double()
            out.index_add_(0, torch.tensor([i for i, _, _ in chunk]), sums)
        return out.numpy()

    def score(self, texts: Sequence[str], method: str | None = None,
              batch_size: int = 32) -> np.ndarray:
        """One score per text (see ``sums``); higher = more machine-like."""
        if not texts:
            return np.zeros(0)
        return ai.scores_from_sums(self.sums(texts, batch_size), method or self.settings.score)

def save_models(models: DetectorModels, threshold: float, path: Any) -> None:
    """Observer, performer, settings and the calibrated threshold, for later stages."""
    state = {"settings": dataclasses.asdict(models.settings),
                       "threshold": float(threshold),
                       "observer": models.observer.state_dict(),
                       "performer": models.performer.state_dict()}
    atomic_write(path, lambda f: torch.save(state, f), binary=True)

def load_models(path: Any) -> tuple[DetectorModels, float]:
    """The detector a curation stage saved, and its threshold (scores above it are flagged)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    settings = dict(state["settings"])
    settings["hard_decodings"] = tuple(tuple(x) for x in settings["hard_decodings"])
    s = DetectorSettings(**settings)
    models = []
    for name in ("observer", "performer"):
        model = build_model(byte_model_config(s), s.seed)
        model.load_state_dict(state[name])
        models.append(model.eval())
    return DetectorModels(models[0], models[1], s), float(state["threshold"])

def byte_model_config(s: DetectorSettings, width_scale: float = 1.0) -> ModelConfig:
    """A tiny dense byte-level transformer (no experts: the detector should be cheap)."""
    d = max(32, int(s.d_model * width_scale) // 32 * 32)
    return ModelConfig(vocab_size=bl.BYTE_VOCAB, n_layers=s.n_layers, d_model=d,
                       n_heads=max(1, d // 32), n_kv_heads=1, attn_period=1,
                       window=s.seq_len, max_seq_len=s.seq_len, ffn_layout="all_dense",
                       d_ff=4 * d, d_latent=None, zero_init_attn=True)

def build_model(cfg: ModelConfig, seed: int) -> torch.nn.Module:
    from mai_repro.model.transformer import Transformer

    torch.manual_seed(seed)
    return Transformer(cfg)

def score_files(run_dir: str, files: list[str]) -> list[dict]:
    """One record per file: each layer's score, the combined score, the threshold and the
    decision, from ``<run_dir>/curation/{detector.pt, ai_detector/}``."""
    import json
    from pathlib import Path

    from mai_repro.data import ai_detect

    stage = Path(run_dir) / "curation"
    needed = [stage / "detector.pt", stage / "ai_detector" / "supervised.npz",
              stage / "ai_detector" / "meta.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no AI-content detector in {stage} (missing {', '.join(missing)}); run the "
            f"curation stage first: python -m mai_repro.pipeline --only 01 --run-dir {run_dir}")
    byte_models, _ = load_models(needed[0])
    supervised = ai_detect.load(stage / "ai_detector")
    meta = json.loads(needed[2].read_text())
    texts = [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]
    sup = supervised.score(texts, byte_models) if texts else []
    zs = byte_models.score(texts, meta["zero_shot"]["score"]) if texts else []
    out = []
    for f, t, s_sup, s_zs in zip(files, texts, sup, zs, strict=True):
        markers = marker_hits(t)
        combined = float(s_sup) + (1e3 if markers else 0.0)
        zs_flag = meta["zero_shot"]["acts"] and s_zs > meta["zero_shot"]["threshold"]
        out.append({"path": f, "markers": markers, "supervised": round(float(s_sup), 4),
                    "zero_shot": {"score": meta["zero_shot"]["score"],
                                  "value": round(float(s_zs), 4),
                                  "threshold": round(meta["zero_shot"]["threshold"], 4),
                                  "acts": meta["zero_shot"]["acts"]},
                    "combined": round(combined, 4), "threshold": round(meta["threshold"], 4),
                    "fpr": meta["fpr"],
                    "decision": "ai" if combined > meta["threshold"] or zs_flag else "human"})
    return out
