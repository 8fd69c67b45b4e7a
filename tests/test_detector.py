"""The curation detector: windowed scoring and generation (mai_repro.eval.detector)."""

import numpy as np
import pytest
import torch

from mai_repro.data import ai_content as ai
from mai_repro.data import bytelevel as bl
from mai_repro.eval import detector as det


@pytest.mark.parametrize("n", [1, 7, 8, 9, 20, 57])
@pytest.mark.parametrize("context", [0, 3])
def test_windows_score_every_byte_once(n, context):
    data = bytes(range(n))
    seen = []
    for ids, start in bl.windows(data, seq_len=8, context=context, first=2):
        assert ids[0] == bl.BOS and len(ids) <= 8
        targets = ids[1:]
        assert start == 2 or start == context
        if start == context and start:  # later windows: the context precedes the scored bytes
            assert targets[start - 1] + 1 == targets[start]
        seen += targets[start:]
    assert seen == list(range(2, n))
    with pytest.raises(ValueError):
        bl.windows(data, seq_len=8, context=7, first=2)


def test_sums_add_up_across_windows():
    g = torch.Generator().manual_seed(0)
    obs, perf = torch.randn(2, 30, 11, generator=g), torch.randn(2, 30, 11, generator=g)
    targets = torch.randint(0, 11, (2, 30), generator=g)
    mask = torch.ones(2, 30, dtype=torch.bool)
    whole = ai.token_sums(obs, perf, targets, mask)
    parts = (ai.token_sums(obs[:, :13], perf[:, :13], targets[:, :13], mask[:, :13])
             + ai.token_sums(obs[:, 13:], perf[:, 13:], targets[:, 13:], mask[:, 13:]))
    assert torch.allclose(whole, parts, atol=1e-4)
    for method in ai.METHODS:
        assert np.allclose(ai.scores_from_sums(whole, method),
                           ai.scores_from_sums(parts, method), atol=1e-5)
    assert torch.allclose(ai.binoculars_score(obs, perf, targets, mask),
                          torch.tensor(ai.scores_from_sums(whole, "binoculars")).float())
    with pytest.raises(ValueError):
        ai.scores_from_sums(whole, "perplexity")


def _models(s):
    torch.manual_seed(0)
    return det.DetectorModels(det.build_model(det.byte_model_config(s), 0),
                              det.build_model(det.byte_model_config(s), 1), s)


def test_score_covers_the_configured_bytes():
    s = det.DetectorSettings(seq_len=64, prompt_len=8, score_bytes=200, d_model=32)
    models = _models(s)
    texts = ["a" * 20, "b" * 150, "c" * 1000, "é" * 300]
    sums = models.sums(texts)
    expected = [min(len(t.encode()), 200) - (s.prompt_len - 1) for t in texts]
    assert sums[:, ai.SUMS.index("n")].tolist() == expected
    # batching does not change scores
    one = np.concatenate([models.score([t]) for t in texts])
    assert np.allclose(models.score(texts, batch_size=3), one, atol=1e-5)
    assert models.score([]).shape == (0,)


class _AsciiOnly(torch.nn.Module):
    """A byte model that only ever samples ASCII bytes (never BOS): lengths are exact."""

    def __init__(self, s):
        super().__init__()
        self.inner = det.build_model(det.byte_model_config(s), 0)
        self.cfg, self.moe_layers = self.inner.cfg, self.inner.moe_layers

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        out.logits[..., 128:] = -1e9
        return out


def test_generation_continues_prompts_to_the_requested_lengths():
    s = det.DetectorSettings(seq_len=64, prompt_len=8, score_bytes=130, d_model=32,
                             temperature=0.7, top_p=0.9)
    prompts = ["The quick brown fox", "Lorem ipsum dolor sit amet"]
    texts = det.generate_texts(_AsciiOnly(s), prompts, s, seed=0, lengths=[40, 130])
    assert [len(t.encode()) for t in texts] == [40, 130]
    assert all(t.startswith(p[: s.prompt_len - 1]) for t, p in zip(texts, prompts, strict=True))
    again = det.generate_texts(_AsciiOnly(s), prompts, s, seed=0, lengths=[40, 130])
    assert again == texts  # seeded
    with pytest.raises(ValueError):
        det.generate_texts(_AsciiOnly(s), ["short"], s, seed=0)


def test_saved_detector_scores_the_same(tmp_path):
    from mai_repro.eval import detector as det

    s = det.DetectorSettings(seq_len=32, prompt_len=8, score_bytes=64, d_model=32, steps=2,
                             batch_size=2)
    texts = ["def f(x):\n    return x + 1\n" * 4, "The quick brown fox jumps. " * 6]
    models = det.train_models(texts, s, progress=False)
    det.save_models(models, 0.25, tmp_path / "detector.pt")
    loaded, threshold = det.load_models(tmp_path / "detector.pt")
    assert threshold == 0.25 and loaded.settings == s
    assert np.array_equal(models.score(texts), loaded.score(texts))
