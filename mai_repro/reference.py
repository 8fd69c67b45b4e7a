"""Figures stated in the MAI-Thinking-1 report that this project compares itself with.

Source: "MAI-Thinking-1: Building a Hill-Climbing Machine" (Microsoft AI, June 2026), as
collected in the project's RECIPE.md. Tokens are counted in tokens (not trillions) here.
"""

from __future__ import annotations

T = 1e12  # one trillion
B = 1e9  # one billion

TOTAL_PARAMS = 1.0 * T  # "~1T total"
ACTIVE_PARAMS = 35 * B  # "35B active"
N_LAYERS = 78
VOCAB_SIZE = 200_019
N_EXPERTS = 512
TOP_K = 8

# Training stages: tokens, context length, GPUs.
STAGES = {
    "pre-training": {"tokens": 30 * T, "context": 16_384, "gpus": 8_192},
    "mid-training 1": {"tokens": 3.4 * T, "context": 65_536, "gpus": 8_192},
    "mid-training 2": {"tokens": 150 * B, "context": 262_144, "gpus": 4_096},
}

# Goodput over the pre-training run on 8K GPUs.
GOODPUT = 0.900
OVERHEAD_HOURS = 51.0
# overhead part: (hours, share of the overhead as stated)
OVERHEAD_PARTS = {
    "recomputation": (6.5, 0.15),
    "non-stepping time": (14.0, 0.27),
    "MFU drop": (18.0, 0.35),
}

# Composition of the 30T training tokens: family -> (unique T, training T, share %, epochs).
COMPOSITION = {
    "Code": (7.4, 16.4, 54.6, 2.22),
    "STEM": (2.2, 4.7, 15.8, 2.17),
    "Math": (0.3, 1.6, 5.4, 5.28),
    "Books and journals": (0.6, 0.9, 3.1, 1.65),
    "PDFs": (2.7, 1.4, 4.7, 0.53),
    "Web text": (8.1, 4.5, 14.9, 0.55),
    "Multilingual (other)": (8.1, 0.5, 1.6, 0.06),
}
COMPOSITION_TOTAL = (29.2, 30.0, 100.0, 1.03)
TRAINING_TOKENS = 30 * T

# Weights of the held-out NLL objective of the mixture search.
OBJECTIVE_WEIGHTS = {"code": 0.5, "stem": 0.175, "math": 0.175, "general": 0.1,
                     "multilingual": 0.05}
