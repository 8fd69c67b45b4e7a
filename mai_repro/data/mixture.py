"""The mixture planner: unique tokens per family + target shares + a budget -> epochs.

The MAI-Thinking-1 report chooses a share of the training budget for each source family and
reads off how many times each family is repeated (math 5.28 epochs, multilingual 0.06). The
planner does that arithmetic, and optionally caps repetition: a family that would exceed its
epoch cap gets ``cap * unique`` tokens and its shortfall moves to the families with headroom,
in proportion to their shares. Every such move is reported, never silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyPlan:
    family: str
    unique_tokens: float
    target_share: float  # as asked, normalised to sum to 1
    training_tokens: float
    capped: bool = False

    @property
    def epochs(self) -> float:
        return self.training_tokens / self.unique_tokens if self.unique_tokens else float("inf")


@dataclass(frozen=True)
class MixturePlan:
    families: list[FamilyPlan]
    budget: float
    warnings: list[str] = field(default_factory=list)

    @property
    def planned_tokens(self) -> float:
        return sum(f.training_tokens for f in self.families)

    @property
    def unique_tokens(self) -> float:
        return sum(f.unique_tokens for f in self.families)

    def share(self, family: str) -> float:
        return self[family].training_tokens / self.planned_tokens

    def __getitem__(self, family: str) -> FamilyPlan:
        for f in self.families:
            if f.family == family:
                return f
        raise KeyError(f"no family {family!r}; families: {[f.family for f in self.families]}")

    def table(self) -> list[dict[str, float | str]]:
        """Rows in the report's format: unique tokens, training tokens, share, epochs."""
        rows: list[dict[str, float | str]] = [
            {"family": f.family, "unique": f.unique_tokens, "training": f.training_tokens,
             "share": self.share(f.family), "epochs": f.epochs} for f in self.families]
        rows.append({"family": "Total", "unique": self.unique_tokens,
                     "training": self.planned_tokens, "share": 1.0,
                     "epochs": self.planned_tokens / self.unique_tokens})
        return rows


def plan_mixture(unique_tokens: Mapping[str, float], shares: Mapping[str, float],
                 budget: float, max_epochs: Mapping[str, float] | float | None = None,
                 ) -> MixturePlan:
    """Plan training tokens per family; ``shares`` need not sum to 1 (they are normalised).

    ``max_epochs`` caps repetition per family (one number for all, or a mapping). A capped
    family's shortfall is spread over uncapped families in proportion to their shares; when
    no family has headroom left, the plan falls short of the budget and says so.
    """
    if set(unique_tokens) != set(shares):
        raise ValueError(f"families differ: unique tokens for {sorted(unique_tokens)}, "
                         f"shares for {sorted(shares)}")
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    bad = {k: v for k, v in shares.items() if v < 0} | {
        k: v for k, v in unique_tokens.items() if v < 0}
    if bad:
        raise ValueError(f"negative shares or token counts: {bad}")
    total_share = sum(shares.values())
    if total_share <= 0:
        raise ValueError("shares sum to zero")
    target = {k: v / total_share for k, v in shares.items()}
    if max_epochs is None:
        caps = {k: float("inf") for k in target}
    elif isinstance(max_epochs, Mapping):
        caps = {k: float(max_epochs.get(k, float("inf"))) for k in target}
    else:
        caps = {k: float(max_epochs) for k in target}

    tokens = {k: target[k] * budget for k in target}
    capped: set[str] = set()
    warnings: list[str] = []
    while True:
        over = [k for k in tokens if k not in capped and tokens[k] > caps[k] * unique_tokens[k]]
        if not over:
            break
        shortfall = 0.0
        for k in over:
            limit = caps[k] * unique_tokens[k]
            shortfall += tokens[k] - limit
            if unique_tokens[k] == 0:
                warnings.append(f"{k}: no unique tokens, so its share of {target[k]:.1%} "
                                f"cannot be met; given 0 tokens")
            else:
                warnings.append(f"{k}: {tokens[k] / unique_tokens[k]:.2f} epochs would exceed "
                                f"its cap of {caps[k]:g}; capped at {limit:.4g} tokens")
            tokens[k] = limit
            capped.add(k)
        open_ = [k for k in tokens if k not in capped and target[k] > 0]
        if not open_:
            warnings.append(f"no family has headroom left: the plan is {shortfall:.4g} tokens "
                            f"short of the budget")
            break
        weight = sum(target[k] for k in open_)
        for k in open_:
            tokens[k] += shortfall * target[k] / weight
        warnings.append(f"{shortfall:.4g} tokens moved to {', '.join(open_)} in proportion "
                        f"to their shares")
    families = [FamilyPlan(k, float(unique_tokens[k]), target[k], tokens[k], k in capped)
                for k in target]
    return MixturePlan(families, float(budget), warnings)


def rounding_interval(unique: float, share: float, budget: float, unique_step: float,
                      share_step: float) -> tuple[float, float]:
    """Range of epochs consistent with a table that rounds unique tokens and shares.

    The report rounds unique tokens to 0.1T and shares to 0.1%: a reproduced epoch count can
    only be asked to fall inside the interval that such rounding leaves open.
    """
    lo_share, hi_share = share - share_step / 2, share + share_step / 2
    lo_unique, hi_unique = unique - unique_step / 2, unique + unique_step / 2
    return lo_share * budget / hi_unique, hi_share * budget / max(lo_unique, 1e-12)
