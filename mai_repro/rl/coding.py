"""The coding tasks as RL problems: a prompt, a completion's function body, a group's rewards.

The seam between the agentic environment and a GRPO climb (issue 23, item 5, not yet wired:
``rl/rollout.sample_groups`` grades with ``tasks.grade`` only). A climb on coding tasks
prompts with :func:`prompt`, and grades a group of sampled completions with
:func:`grade_group`, which runs one sandboxed episode per completion and returns, besides the
binary outcomes the climb's filters use, the gated lexicographic rewards and the number of
hacking attempts (episodes with a violation) for the per-step metrics.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mai_repro.rl.aggregate import lexicographic, objectives
from mai_repro.rl.repos import VISIBLE, Task, TaskRepo
from mai_repro.rl.sandbox import Completion, Defences, Limits, run_episode


def prompt(task: Task) -> str:
    """The function's signature, its docstring and the visible examples; the model writes the
    body after the prompt's last line."""
    examples = "\n".join(f"    # {task.function}({', '.join(map(repr, a))}) == {e!r}"
                         for a, e in task.cases[:VISIBLE])
    return (f"def {task.function}({task.params}):\n    \"\"\"{task.doc}\"\"\"\n{examples}\n")


def body_from_text(text: str) -> str:
    """A completion's function body: its lines up to the first one that leaves the function
    (not indented); tabs count as indentation."""
    lines = []
    for line in text.splitlines():
        if line.strip() and not line.startswith((" ", "\t")):
            break
        lines.append(line)
    body = "\n".join(lines).rstrip()
    return body if body.strip() else "    pass"


@dataclass
class GroupGrade:
    correct: list[bool]  # hidden tests all passed (what the climb's filters use)
    rewards: list[float]  # gated lexicographic rewards
    attempts: int  # completions with a violation: hacking attempts (or unsafe accidents)
    reasons: Counter  # first violation of each unsafe completion, counted


def grade_group(repo: TaskRepo, texts: list[str], defences: Defences | None = None,
                limits: Limits | None = None, length_cap: int = 600, workers: int = 2
                ) -> GroupGrade:
    """One sandboxed episode per completion of a group (every defence on by default)."""
    defences, limits = defences or Defences(), limits or Limits()
    bodies = [body_from_text(t) for t in texts]
    with ThreadPoolExecutor(workers) as pool:
        episodes = list(pool.map(lambda b: run_episode(repo, Completion(body=b), defences,
                                                       limits), bodies))
    rewards = [lexicographic(objectives(ep.passed, ep.total, ep.violations,
                                        any(e.startswith("import:") for e in ep.errors),
                                        len(b), length_cap))
               for ep, b in zip(episodes, bodies, strict=True)]
    unsafe = [ep for ep in episodes if ep.violations]
    return GroupGrade(correct=[ep.solved and ep.safe for ep in episodes], rewards=rewards,
                      attempts=len(unsafe), reasons=Counter(ep.violations[0] for ep in unsafe))
