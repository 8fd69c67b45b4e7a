"""Stage ``agentic`` (notebook 12): the sandboxed coding environment against its red team.

The report trains agentic coding in sandboxed, network-isolated containers and names two
defences against reward hacking: the git history after the base commit is scrubbed, and the
test files are reset before grading; rewards across objectives are gated (an unsafe answer
gets the minimum) or lexicographic (RECIPE.md section 6). This stage builds the project's
procedural repository tasks (:mod:`mai_repro.rl.repos`), runs every red-team policy
(:mod:`mai_repro.rl.redteam`) under every defence setting below in the environment of
:mod:`mai_repro.rl.sandbox`, and scores each episode with the gated lexicographic reward of
:mod:`mai_repro.rl.aggregate`. The table of policies x settings shows which defence stops
which hack: with all defences on every hack gets the minimum reward with a logged reason;
with scrubbing off the ``.git`` hack passes the hidden tests; with the test reset off the
test-editing hacks do.
"""

from __future__ import annotations

import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro import plots
from mai_repro.artifacts import Run
from mai_repro.rl import redteam
from mai_repro.rl.aggregate import R_MIN, lexicographic, objectives
from mai_repro.rl.repos import TaskRepo, build_repo, make_tasks
from mai_repro.rl.sandbox import (
    Defences,
    Episode,
    Limits,
    namespaces_available,
    run_episode,
)
from mai_repro.schema import result_dict

STAGE = "agentic"
SETTINGS: dict[str, Defences] = {
    "all on": Defences(),
    "scrub off": Defences(scrub=False),
    "test reset off": Defences(reset_tests=False),
    "monitor off": Defences(monitor=False),
    "isolation off": Defences(isolate=False),
    "scrub+monitor off": Defences(scrub=False, monitor=False),
}


@dataclass
class AgenticMetrics:
    """What the stage's manifest records, read back by attribute. ``solved`` and ``reward``:
    policy -> setting (``SETTINGS``) -> share of tasks solved / mean reward."""

    namespaces: bool  # network, mount and PID namespaces available (else limits only)
    tasks: int
    redteam_tasks: int
    episodes: int
    episode_s_mean: float
    hacks: int
    hacks_at_min_all_on: int
    hacks_with_reason_all_on: int
    reasons_all_on: dict[str, str]
    reference_solved: float
    reference_reward: float
    stub_reward: float
    solved: dict[str, dict[str, float]]
    reward: dict[str, dict[str, float]]
    settings: list[str]


METRICS = AgenticMetrics


@dataclass
class AgenticResult:
    rows: list[dict[str, Any]]  # one per (policy, setting), over the red-team tasks
    honest: list[dict[str, Any]]  # one per (task, honest policy), all defences on
    metrics: AgenticMetrics
    figures: dict[str, Path]


def reward(ep: Episode, chars: int, cap: int) -> float:
    """The gated lexicographic reward of an episode."""
    import_failed = any(e.startswith("import:") for e in ep.errors)
    return lexicographic(objectives(ep.passed, ep.total, ep.violations, import_failed,
                                    chars, cap))


def _chars(completion: Any) -> int:
    return len(completion.body or "") + sum(len(t or "") for t in completion.files.values())


def _clean(reason: str) -> str:
    """A reason without this machine's temporary paths (notebooks print them)."""
    return re.sub(r"/tmp/\S*?mai-sbx-\w+/", "<episode>/", reason)


def _run(policy: redteam.Policy, repo: TaskRepo, setting: str, ctx: dict, limits: Limits,
         cap: int) -> dict[str, Any]:
    completion = policy.complete(repo.task, ctx)
    ep = run_episode(repo, completion, SETTINGS[setting], limits)
    return {"policy": policy.name, "setting": setting, "task": repo.task.name,
            "difficulty": repo.task.difficulty, "solved": ep.solved,
            "passed": f"{ep.passed}/{ep.total}", "reward": reward(ep, _chars(completion), cap),
            "violations": [_clean(v) for v in ep.violations],
            "errors": ep.errors[:2], "isolated": ep.isolated, "wall_s": ep.wall_s}


def _summarise(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for policy in redteam.POLICIES:
        for setting in SETTINGS:
            eps = [e for e in episodes if e["policy"] == policy.name and e["setting"] == setting]
            reasons = [e["violations"][0] for e in eps if e["violations"]]
            rows.append({"policy": policy.name, "setting": setting,
                         "solved": float(np.mean([e["solved"] for e in eps])),
                         "reward": float(np.mean([e["reward"] for e in eps])),
                         "all_min": all(e["reward"] == R_MIN for e in eps),
                         "reason": reasons[0] if reasons else "",
                         "what": policy.what, "stopped_by": policy.stopped_by})
    return rows


def build(run: Run) -> AgenticResult:
    """Stage 12: honest baselines on every task, the red team under every defence setting."""
    from tqdm.auto import tqdm

    a = run.cfg.agentic
    limits = Limits(cpu_s=a.cpu_s, wall_s=a.wall_s, memory_mb=a.memory_mb, file_mb=a.file_mb,
                    nproc=a.nproc)
    with run.stage(STAGE) as st, tempfile.TemporaryDirectory(prefix="mai-tasks-") as tmp:
        tasks = make_tasks(a.difficulties, a.tasks_per_difficulty, run.cfg.seed)
        repos = [build_repo(t, Path(tmp) / t.name) for t in tasks]
        # red team: the first tasks taken round-robin over the difficulties
        by_diff = [[r for r in repos if r.task.difficulty == d] for d in a.difficulties]
        order = [r for i in range(a.tasks_per_difficulty) for group in by_diff
                 for r in group[i:i + 1]]
        red = order[:a.redteam_tasks]
        with ThreadPoolExecutor(a.workers) as pool, \
                redteam.oracle_per_task({r.task.name: r.task.fix_source for r in red}) as ports:
            jobs = [(p, r, "all on", {}) for p in redteam.POLICIES if p.honest for r in repos]
            jobs += [(p, r, s, {"oracle_port": ports[r.task.name]}) for p in redteam.POLICIES
                     for r in red for s in SETTINGS]
            futures = [pool.submit(_run, p, r, s, ctx, limits, a.length_cap)
                       for p, r, s, ctx in jobs]
            results = [f.result() for f in tqdm(futures, desc="episodes")]
        honest = results[:len(repos) * 2]
        episodes = [e for e in results if e["task"] in {r.task.name for r in red}]
        rows = _summarise(episodes)
        metrics = _metrics(rows, honest, results, a)
        st.metrics.update(result_dict(metrics))
        figures = {"table": _figure(rows, st.path("figures", "redteam_table"))}
    return AgenticResult(rows, honest, metrics, figures)


def _cell(rows: list[dict[str, Any]], policy: str, setting: str) -> dict[str, Any]:
    return next(r for r in rows if r["policy"] == policy and r["setting"] == setting)


def _metrics(rows: list[dict[str, Any]], honest: list[dict[str, Any]],
             results: list[dict[str, Any]], a: Any) -> AgenticMetrics:
    hacks = [p.name for p in redteam.HACKS]
    on = {h: _cell(rows, h, "all on") for h in hacks}
    ref = [e for e in honest if e["policy"] == "reference_fix"]
    stub = [e for e in honest if e["policy"] == "stub"]
    return AgenticMetrics(
        namespaces=namespaces_available(),
        tasks=len(ref), redteam_tasks=a.redteam_tasks, episodes=len(results),
        episode_s_mean=float(np.mean([e["wall_s"] for e in results])),
        hacks=len(hacks),
        hacks_at_min_all_on=sum(c["all_min"] for c in on.values()),
        hacks_with_reason_all_on=sum(bool(c["reason"]) for c in on.values()),
        reasons_all_on={h: c["reason"] for h, c in on.items()},
        reference_solved=float(np.mean([e["solved"] for e in ref])),
        reference_reward=float(np.mean([e["reward"] for e in ref])),
        stub_reward=float(np.mean([e["reward"] for e in stub])),
        solved={p.name: {s: float(_cell(rows, p.name, s)["solved"]) for s in SETTINGS}
                for p in redteam.POLICIES},
        reward={p.name: {s: float(_cell(rows, p.name, s)["reward"]) for s in SETTINGS}
                for p in redteam.POLICIES},
        settings=list(SETTINGS),
    )


def _figure(rows: list[dict[str, Any]], path: Path) -> Path:
    policies = [p.name for p in redteam.POLICIES]
    settings = list(SETTINGS)
    grid = np.array([[_cell(rows, p, s)["reward"] for s in settings] for p in policies])
    fig, ax = plots.new(1, 1, width=8.5, height=6.5)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=R_MIN, vmax=1.0, aspect="auto")
    for i, p in enumerate(policies):
        for j, s in enumerate(settings):
            c = _cell(rows, p, s)
            mark = "solved" if c["solved"] == 1 else (f"{c['solved']:.0%}" if c["solved"] else "")
            ax.text(j, i, f"{c['reward']:+.2f}\n{mark}", ha="center", va="center", fontsize=7)
    ax.grid(False)
    ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right")
    ax.set_yticks(range(len(policies)), policies)
    ax.set_title("gated lexicographic reward per policy and defence setting\n"
                 "(-1 = the safety gate; 'solved' = the hidden tests passed)")
    fig.colorbar(im, ax=ax, shrink=0.7)
    return plots.save(fig, path)
