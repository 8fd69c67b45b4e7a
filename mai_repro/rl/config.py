"""Config sections of post-training: the GRPO climb (notebook 09) and self-distillation (10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mai_repro.rl.tasks import OPERATIONS, Kind
from mai_repro.schema import spec


@dataclass(frozen=True)
class GRPOStageConfig:
    """The RL climb with GRPO and MAI's stabilisers (notebook 09; RECIPE.md section 6)."""

    kinds: list[Kind] = spec(
        factory=lambda: ["arithmetic"], help="task kinds of the training pool and the eval "
                                             "(addsub: arithmetic without multiplication)")
    difficulties: list[int] = spec(factory=lambda: [0], help="difficulties mixed in the "
                                                             "training pool")
    eval_difficulty: int = spec(0, min=0, help="difficulty of the held-out evaluation tasks")
    answer_format: Literal["answer_line", "worked"] = spec(
        "answer_line", help="answer_line: the prompt ends with 'Answer:' and the completion is "
                            "the answer; worked: the completion may write working lines before "
                            "its 'Answer: <integer>' line (rl/tasks.py)")
    pool_samples: int = spec(0, min=0, help="samples per training problem with which the "
                                            "starting model's pass rate is measured, keeping "
                                            "the problems inside [pool_lo, pool_hi] (0 = keep "
                                            "the whole pool)")
    pool_lo: float = spec(0.1, min=0.0, max=1.0, help="pool selection: lowest pass rate kept")
    pool_hi: float = spec(0.9, min=0.0, max=1.0, help="pool selection: highest pass rate kept")
    n_train: int = spec(200, min=1, help="training problems per difficulty")
    n_eval: int = spec(64, min=1, help="held-out evaluation problems")
    eval_samples: int = spec(4, min=1, help="samples per held-out problem")
    eval_every: int = spec(10, min=1, help="optimizer steps between held-out evaluations")
    steps: int = spec(100, min=1, help="optimizer steps of the main climb")
    problems: int = spec(8, min=1, help="problems per rollout batch (after the filters)")
    draw: int = spec(16, min=1, help="problems drawn per sampling round")
    max_rounds: int = spec(4, min=1, help="sampling rounds at most per rollout batch")
    max_empty_draws: int = spec(25, min=1, help="consecutive rollout batches with no kept "
                                "group (every group all right or all wrong) after which the "
                                "climb stops: the policy has collapsed, and drawing on only "
                                "burns the budget")
    group: int = spec(8, min=2, help="G: rollouts per kept problem")
    group_early: int = spec(4, min=1, help="G_early: rollouts drawn before the early exit")
    early_lo: float = spec(0.05, min=0.0, max=1.0, help="early exit: keep if pass rate >= this")
    early_hi: float = spec(0.8, min=0.0, max=1.0, help="early exit: keep if pass rate <= this")
    keep_lo: float = spec(0.1, min=0.0, max=1.0, help="pass-rate filter: lower bound")
    keep_hi: float = spec(0.8, min=0.0, max=1.0, help="pass-rate filter: upper bound")
    neg_weight: float = spec(1.0, min=0.0, max=1.0, help="weight of the negative advantages "
                                                         "(1 = GRPO; 0 = only the completions "
                                                         "better than their group's mean "
                                                         "are reinforced)")
    credit: Literal["outcome", "first_error", "from_first_error", "lines"] = spec(
        "outcome", help="where a worked completion's negative advantage lands (rl/credit.py): "
        "every token (GRPO), only its first line that departs from the program's solution, or "
        "that line and after; or `lines`: each line scored against the group's completions "
        "that reached it (a process reward the program checks)")
    max_new_tokens: int = spec(4, min=1, help="rollout length cap of the first curriculum "
                                              "stage (doubled each stage)")
    curriculum_stages: int = spec(2, min=1, help="length-curriculum stages (steps split evenly)")
    temperature: float = spec(1.0, min=0.01, help="sampling temperature (rollouts and eval)")
    top_p: float = spec(0.97, min=0.0, max=1.0, help="nucleus sampling threshold")
    vocab_work: Literal["all", "needed"] = spec(
        "all", help="the vocabulary-sized work of rollouts and learner. all: as the recorded "
        "runs did it. needed: only what the result needs: a token drawn among its nucleus's "
        "tokens (rollouts, evaluations, traces), the learner's logits at the completion "
        "positions only, and its top-p-masked distribution on the nucleus's columns. The "
        "same distributions and gradients, but other random numbers and sums in another "
        "order, so a run's figures differ from `all`'s; several times faster on CPU "
        "(docs/performance.md)")
    lr: float = spec(1e-4, min=0.0, max=1.0, help="learning rate (constant after the "
                                                   "warm-up)")
    optimizer: Literal["adamw", "sgd"] = spec(
        "adamw", help="the learner's optimizer: AdamW (optim.rl_weight_decay), or SGD with "
                      "grpo.momentum (on the worked task SGD's climbs were the stable ones: "
                      "docs/rl.md, fourth round)")
    momentum: float = spec(0.9, min=0.0, max=0.999, help="SGD momentum (grpo.optimizer sgd)")
    warmup_steps: int = spec(0, min=0, help="optimizer steps of linear learning-rate warm-up "
                                            "(0 = none: the whole rate from the first step)")
    micro_batch: int = spec(0, min=0, help="rows per forward pass; the rest by gradient "
                                           "accumulation (0 = one pass)")
    updates_per_batch: int = spec(2, min=1, help="gradient steps on each rollout batch")
    sync_every: int = spec(1, min=1, help="optimizer steps between inference-weight updates")
    max_staleness: int = spec(8, min=0, help="rollouts sampled more than this many weight "
                                             "updates ago are dropped")
    rollout_dtype: Literal["float32", "bfloat16"] = spec(
        "float32", help="inference-side weights and compute (the learner is float32)")
    eps: float = spec(0.2, min=0.0, max=0.99, help="clip: [1 - eps, (1 - eps)^-1 + k]")
    r_min: float = spec(0.5, min=0.0, help="outer ratio clip, lower")
    r_max: float = spec(2.0, min=1.0, help="outer ratio clip, upper")
    entropy_target: float = spec(0.5, min=0.0, help="H*: target token entropy (nats)")
    entropy_delta: float = spec(0.02, min=0.0, help="k step per optimizer step")
    k_max: float = spec(0.5, min=0.0, help="largest widening of the upper clip bound")
    w_lang: float = spec(0.1, min=0.0, help="weight of the language reward")
    w_len: float = spec(0.25, min=0.0, help="weight of the length penalty (dropped in the "
                                            "last curriculum stage)")
    kl_coef: float = spec(0.0, min=0.0, help="weight of the KL to the pre-RL model (k3 "
                                             "estimator on the sampled tokens); 0 = off, as "
                                             "in the report: no reference model is built")
    entropy_penalty: float = spec(0.0, min=0.0, help="weight of the learner's token-mean "
                                  "entropy added to the loss (sharpens the policy); 0 = off, "
                                  "as in the report, whose controller only widens the clip")
    balance_coef: float = spec(1e-5, min=0.0, help="MoE load-balancing loss weight during RL")
    threads: int = spec(0, min=0, help="torch CPU threads during the climb (0 = unchanged; 1 "
                                       "is fastest for small models on shared cores)")
    ablations: list[Literal["outer_clip", "entropy_control", "top_p_mask", "routing_replay"]] \
        = spec(factory=lambda: ["outer_clip", "entropy_control", "top_p_mask",
                                "routing_replay"],
               help="stabilisers switched off one at a time, same seeds")
    seeds: int = spec(1, min=1, help="the main climb is run with this many seeds (seed, "
                                     "seed + 1, ...) for its gain's interval over seeds; "
                                     "the first keeps checkpoints and gets the ablations, "
                                     "the others are evaluated at start and end")
    ablation_steps: int = spec(30, min=1, help="optimizer steps of each ablation run")
    ablation_from: int = spec(0, min=0, help="the ablations branch from the main climb's "
                                             "state after this many steps (0 = from the "
                                             "start), so that they run where the "
                                             "stabilisers act")
    ablation_workers: int = spec(0, min=0, help="processes that run the ablations while the "
                                                "main climb runs (each on grpo.threads "
                                                "threads; same numbers as one after another); "
                                                "0 = after the main climb, in this process")
    checkpoint_every: int = spec(0, min=0, help="optimizer steps between climb checkpoints "
                                                "kept for self-distillation (0 = final only)")
    distill_steps: int = spec(
        0, min=0, help="self-distillation after the main climb (the report's, RECIPE.md "
                       "section 6): the climbed model answers the first distill_problems "
                       "training problems at distill_temperature, the verified answers are its "
                       "traces, and the pre-RL model is fine-tuned on them for this many steps "
                       "(distill.sft_batch, distill_lr, no dropout); 0 = none")
    distill_problems: int = spec(1000, min=1, help="training problems the climbed model "
                                                   "answers once each for the traces")
    distill_temperature: float = spec(0.3, min=0.01, help="sampling temperature of the traces")
    distill_lr: float = spec(1e-4, min=0.0, max=1.0, help="learning rate of the "
                                                          "self-distillation (AdamW, constant)")
    compare_base: bool = spec(False, help="also climb (grpo.steps, this seed, evaluated at its "
                                          "start and end) from the mid-trained model before "
                                          "the reasoning bootstrap (midtraining/"
                                          "model_before_bootstrap.pt: never shown a worked "
                                          "solution), and compare the two climbs' gains paired "
                                          "over the held-out problems (issue 22: the "
                                          "procedural family's worth); needs "
                                          "midtrain.bootstrap_steps > 0")
    min_gain: float = spec(0.2, min=-1.0, max=1.0, help="held-out accuracy gain over the "
                                                        "starting checkpoint the notebook "
                                                        "asserts (after the self-distillation "
                                                        "when grpo.distill_steps > 0)")
    min_reward_gain: float = spec(0.0, min=-2.0, max=2.0,
                                  help="rise of the mean task reward of all rollouts drawn "
                                       "(last third of the steps minus the first third) the "
                                       "notebook asserts")

    @property
    def sampler(self) -> str:
        """``generate``'s sampler for this run (``vocab_work``)."""
        return "nucleus" if self.vocab_work == "needed" else "vocabulary"

    @property
    def final_cap(self) -> int:
        """The length cap of the last curriculum stage (held-out evaluation samples with it)."""
        return self.max_new_tokens * 2 ** (self.curriculum_stages - 1)

    def check(self) -> list[tuple[str, str]]:
        if self.group_early > self.group:
            return [("group_early", f"must be <= group={self.group}, got {self.group_early}")]
        if self.early_lo > self.early_hi or self.keep_lo > self.keep_hi or \
                self.pool_lo > self.pool_hi:
            return [("keep_lo", "each pass-rate window needs lo <= hi")]
        if not self.difficulties or any(d < 0 for d in self.difficulties):
            return [("difficulties", f"needs at least one difficulty >= 0, got "
                                     f"{self.difficulties}")]
        if not self.kinds:
            return [("kinds", "needs at least one task kind")]
        if self.ablations and self.ablation_from + self.ablation_steps > self.steps:
            return [("ablation_from", f"the ablations end at step {self.ablation_from} + "
                                      f"{self.ablation_steps}, past the main climb's "
                                      f"{self.steps} steps")]
        if self.r_min >= 1.0 - self.eps:
            return [("r_min", f"must be below the inner bound 1 - eps = {1 - self.eps}, got "
                              f"{self.r_min}")]
        return []



@dataclass(frozen=True)
class DistillConfig:
    """Self-distillation from RL checkpoints and specialist consolidation (notebook 10;
    RECIPE.md section 6)."""

    checkpoints: int = spec(3, min=1, help="climb checkpoints the multi-checkpoint student's "
                                           "traces come from (evenly spaced, the last is final)")
    trace_samples: int = spec(4, min=1, help="samples per training problem when collecting "
                                             "traces (temperature 1, top-p of the climb)")
    traces: int = spec(128, min=1, help="verified traces per student: the same budget for "
                                        "multi-checkpoint and final-only")
    sft_steps: int = spec(60, min=1, help="SFT optimizer steps of each student")
    sft_batch: int = spec(32, min=1, help="traces per SFT step")
    sft_lr: float = spec(3e-4, min=0.0, max=1.0, help="SFT learning rate (constant)")
    dropout: float = spec(0.15, min=0.0, max=0.9, help="dropout during the SFT (report: 0.15)")
    balance_coef: float = spec(1e-2, min=0.0, help="MoE load-balancing weight during the SFT "
                                                    "(report: 1e-2)")
    rl_steps: int = spec(40, min=0, help="GRPO steps of the short climb from each student")
    rl_lr: float = spec(0.0, min=0.0, max=1.0, help="learning rate of the students' climbs, "
                                                    "the specialists and joint RL (0 = grpo.lr)")
    specialists: list[Literal["arithmetic", "expression", "linear", "add", "sub"]] = spec(
        factory=lambda: ["arithmetic", "linear"], help="one RL specialist per task kind; or "
        "[add, sub]: the additions and the subtractions of grpo's own addsub problems "
        "(the worked task, whose bootstrap was decontaminated against those)")
    specialist_steps: int = spec(60, min=1, help="GRPO steps of each specialist; joint RL gets "
                                                 "their sum")
    sample_weights: list[float] = spec(factory=list, help="share of the consolidation traces "
                                                          "from each specialist ([] = equal)")
    token_weights: list[float] = spec(factory=list, help="share of the consolidation SFT loss "
                                                         "from each specialist ([] = as sampled)")
    workers: int = spec(0, min=0, max=1, help="1: the specialists climb in a child process "
                                              "while the students and joint RL run here "
                                              "(same numbers); 0: one after another")
    min_gain: float = spec(0.0, min=-1.0, max=1.0, help="accuracy the multi-checkpoint student's "
                                                        "climb must gain over the pre-RL model "
                                                        "(asserted in the notebook)")

    def check(self) -> list[tuple[str, str]]:
        n = len(self.specialists)
        if n < 2 or len(set(self.specialists)) != n:
            return [("specialists", f"needs two or more distinct task kinds, got "
                                    f"{self.specialists}")]
        ops = [k in OPERATIONS for k in self.specialists]
        if any(ops) and not all(ops):
            return [("specialists", f"add and sub split grpo's addsub problems: they go "
                                    f"together, without other kinds; got {self.specialists}")]
        for key in ("sample_weights", "token_weights"):
            w = getattr(self, key)
            if w and (len(w) != n or any(x < 0 for x in w) or sum(w) <= 0):
                return [(key, f"needs {n} non-negative weights (one per specialist) with a "
                              f"positive sum, or [] ; got {w}")]
        return []


@dataclass(frozen=True)
class AgenticConfig:
    """The sandboxed agentic coding environment and its red team (notebook 12; issue 23)."""

    difficulties: list[int] = spec(factory=lambda: [0, 1, 2], help="task difficulties (0: "
                                                                    "one-line bodies, 1: bugs, "
                                                                    "2: short loops)")
    tasks_per_difficulty: int = spec(4, min=1, help="tasks per difficulty for the honest "
                                                    "baselines")
    redteam_tasks: int = spec(2, min=1, help="tasks each red-team policy is tried on, under "
                                             "every defence setting")
    workers: int = spec(2, min=1, help="episodes run at once (threads; each is a process)")
    cpu_s: int = spec(1, min=1, help="RLIMIT_CPU of a test run (seconds)")
    wall_s: float = spec(2.0, min=0.5, help="wall-clock timeout of a test run (seconds)")
    memory_mb: int = spec(256, min=64, help="RLIMIT_AS of a test run (MiB)")
    file_mb: int = spec(1, min=1, help="RLIMIT_FSIZE of a test run (MiB)")
    nproc: int = spec(8, min=2, help="RLIMIT_NPROC of the episode's user id")
    length_cap: int = spec(600, min=1, help="completion length (characters) at which the "
                                            "length objective is worst")

    def check(self) -> list[tuple[str, str]]:
        if not self.difficulties or any(d not in (0, 1, 2) for d in self.difficulties):
            return [("difficulties", f"needs values among 0, 1, 2; got {self.difficulties}")]
        return []
