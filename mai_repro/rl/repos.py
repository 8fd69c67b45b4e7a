"""Procedurally built repository tasks for the agentic coding environment (issue 23).

Every task is a tiny Python repository that this module writes (label: ``procedural``; no
text here comes from a language model): a module ``solution.py`` with one function to write
(a stub raising ``NotImplementedError``) or to repair (a planted bug), and a test file
``tests/test_solution.py`` whose cases are a literal list ``CASES = [(args, expected), ...]``.
The repository holds only the first ``VISIBLE`` cases (examples the policy may read); the full
test file is hidden: the grader keeps it and writes it over the working copy before grading.
The repository is a real git repository with two commits: the *base* commit (the task as the
policy sees it) and a later *fix* commit holding the reference solution, the "future" that
the environment must scrub before an episode (see :mod:`mai_repro.rl.sandbox`).

Difficulties:

- 0: one-line bodies a small code model can write (``return a + b``);
- 1: one-line bugs to fix in an otherwise complete function (an off-by-one, a wrong operator);
- 2: short multi-line bodies (a loop, a condition).
"""

from __future__ import annotations

import ast
import json
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABEL = "procedural"
MODULE = "solution.py"
TEST_FILE = "tests/test_solution.py"
# Files whose content decides the grade; restored from the pristine copy before grading.
TEST_CONFIG = ("conftest.py", "pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini",
               "tests/conftest.py", "tests/__init__.py")
VISIBLE = 2  # cases of the test file committed in the repository


@dataclass(frozen=True)
class Task:
    """One repository task: the function, its base body, its reference body and its cases."""

    name: str
    difficulty: int
    function: str
    params: str  # "a, b"
    doc: str
    base_body: str  # the stub or the buggy body, indented 4 spaces per line
    fix_body: str  # the reference body
    cases: list[tuple[list[Any], Any]]
    label: str = LABEL

    def source(self, body: str) -> str:
        """``solution.py`` with ``body`` as the function's body."""
        return (f'"""Task {self.name} ({self.label}, difficulty {self.difficulty})."""\n\n\n'
                f"def {self.function}({self.params}):\n"
                f'    """{self.doc}"""\n{body.rstrip()}\n')

    @property
    def base_source(self) -> str:
        return self.source(self.base_body)

    @property
    def fix_source(self) -> str:
        return self.source(self.fix_body)

    def test_source(self, cases: list[tuple[list[Any], Any]] | None = None) -> str:
        """The test file: a literal list of cases (the grader reads it with ast.literal_eval,
        never by executing it) and a pytest function for a human running ``pytest``."""
        cases = self.cases if cases is None else cases
        lines = ",\n".join(f"    ({a!r}, {e!r})" for a, e in cases)
        return (f'"""Tests of {self.function} ({self.label})."""\n\n'
                f"from solution import {self.function}\n\n"
                f"CASES = [\n{lines},\n]\n\n\n"
                f"def test_{self.function}():\n"
                f"    for args, expected in CASES:\n"
                f"        assert {self.function}(*args) == expected\n")


def read_cases(test_source: str) -> list[tuple[list[Any], Any]]:
    """The ``CASES`` literal of a test file, parsed without executing anything."""
    for node in ast.parse(test_source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "CASES" for t in node.targets):
            return [(list(a), e) for a, e in ast.literal_eval(node.value)]
    raise ValueError("the test file has no CASES list")


def _reference(task_fn: str, params: str, body: str) -> Callable[..., Any]:
    """Compile our own reference body (project-written code, never a completion)."""
    scope: dict[str, Any] = {}
    exec(f"def {task_fn}({params}):\n{body}\n", scope)  # noqa: S102 (our own template)
    return scope[task_fn]


def _json_round(x: Any) -> Any:
    return json.loads(json.dumps(x))


# --- task templates: (rng) -> (function, params, doc, fix body, buggy body or None, inputs) --

def _t_affine(rng: random.Random):
    k, c = rng.randint(2, 9), rng.randint(-9, 9)
    return ("affine", "x", f"Return {k} * x + ({c}).", f"    return {k} * x + ({c})", None,
            [[rng.randint(-50, 50)] for _ in range(6)])


def _t_add(rng: random.Random):
    return ("add", "a, b", "Return the sum of a and b.", "    return a + b", None,
            [[rng.randint(-99, 99), rng.randint(-99, 99)] for _ in range(6)])


def _t_last(rng: random.Random):
    return ("last", "xs", "Return the last element of the non-empty list xs.",
            "    return xs[-1]", None,
            [[[rng.randint(0, 9) for _ in range(rng.randint(1, 6))]] for _ in range(6)])


def _t_is_multiple(rng: random.Random):
    k = rng.randint(2, 7)
    return ("is_multiple", "n", f"Return True when n is a multiple of {k}.",
            f"    return n % {k} == 0", None, [[rng.randint(0, 60)] for _ in range(8)])


def _t_total_bug(rng: random.Random):
    return ("total", "xs", "Return the sum of the list xs.", "    return sum(xs)",
            "    return sum(xs[1:])",
            [[[rng.randint(1, 9) for _ in range(rng.randint(1, 6))]] for _ in range(6)])


def _t_max_bug(rng: random.Random):
    return ("larger", "a, b", "Return the larger of a and b.", "    return a if a > b else b",
            "    return a if a < b else b",
            [[rng.randint(-20, 20), rng.randint(-20, 20)] for _ in range(6)])


def _t_range_bug(rng: random.Random):
    return ("count_up", "n", "Return the list [1, 2, ..., n].",
            "    return list(range(1, n + 1))", "    return list(range(1, n))",
            [[rng.randint(1, 8)] for _ in range(5)])


def _t_clamp(rng: random.Random):
    lo, hi = sorted(rng.sample(range(-10, 30), 2))
    body = (f"    if x < {lo}:\n        return {lo}\n    if x > {hi}:\n        return {hi}\n"
            "    return x")
    return ("clamp", "x", f"Return x limited to the range [{lo}, {hi}].", body, None,
            [[rng.randint(-30, 50)] for _ in range(8)])


def _t_count_char(rng: random.Random):
    ch = rng.choice("aeiou")
    body = f"    n = 0\n    for c in s:\n        if c == {ch!r}:\n            n += 1\n    return n"
    words = ["banana", "queue", "idea", "aurora", "onion", "eerie", "tutu", "kiwi"]
    return ("count_char", "s", f"Return how many times {ch!r} occurs in s.", body, None,
            [[rng.choice(words) + rng.choice(words)] for _ in range(6)])


def _t_running_max(rng: random.Random):
    body = ("    out = []\n    best = None\n    for x in xs:\n"
            "        best = x if best is None or x > best else best\n"
            "        out.append(best)\n    return out")
    return ("running_max", "xs", "Return the running maximum of the list xs.", body, None,
            [[[rng.randint(-9, 9) for _ in range(rng.randint(0, 7))]] for _ in range(6)])


TEMPLATES: dict[int, list[Callable[[random.Random], tuple]]] = {
    0: [_t_affine, _t_add, _t_last, _t_is_multiple],
    1: [_t_total_bug, _t_max_bug, _t_range_bug],
    2: [_t_clamp, _t_count_char, _t_running_max],
}
STUB = "    raise NotImplementedError"


def make_task(difficulty: int, index: int, seed: int) -> Task:
    """Task ``index`` of a difficulty; the same (difficulty, index, seed) gives the same task."""
    if difficulty not in TEMPLATES:
        raise ValueError(f"difficulty must be one of {sorted(TEMPLATES)}, got {difficulty}")
    rng = random.Random(f"{seed}-{difficulty}-{index}")
    template = TEMPLATES[difficulty][index % len(TEMPLATES[difficulty])]
    fn, params, doc, fix, buggy, inputs = template(rng)
    ref = _reference(fn, params, fix)
    cases = [(_json_round(a), _json_round(ref(*a))) for a in inputs]
    if buggy is not None:  # a bug is only a task if some case exposes it
        bug = _reference(fn, params, buggy)
        assert any(_json_round(bug(*a)) != e for a, e in cases), fn
    return Task(name=f"d{difficulty}-{index:03d}-{fn}", difficulty=difficulty, function=fn,
                params=params, doc=doc, base_body=buggy or STUB, fix_body=fix, cases=cases)


def make_tasks(difficulties: list[int], per_difficulty: int, seed: int) -> list[Task]:
    return [make_task(d, i, seed) for d in difficulties for i in range(per_difficulty)]


# --- git ---------------------------------------------------------------------------------

GIT_ENV = {"GIT_AUTHOR_NAME": "mai-repro", "GIT_AUTHOR_EMAIL": "tasks@mai-repro.invalid",
           "GIT_COMMITTER_NAME": "mai-repro", "GIT_COMMITTER_EMAIL": "tasks@mai-repro.invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": "/nonexistent",
           "PATH": "/usr/local/bin:/usr/bin:/bin"}


def git(repo: Path, *args: str) -> str:
    """Run ``git`` in ``repo`` with a fixed identity and dates (commits are reproducible)."""
    return subprocess.run(["git", "-c", "gc.auto=0", "-c", "safe.directory=*", *args], cwd=repo,
                          env=GIT_ENV, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


@dataclass(frozen=True)
class TaskRepo:
    """A task written out as a git repository: base commit, fix commit, pristine tests."""

    task: Task
    path: Path
    base: str  # sha of the base commit
    fix: str  # sha of the later commit holding the reference fix
    pristine: dict[str, str] = field(default_factory=dict)  # the hidden test files


def build_repo(task: Task, path: Path) -> TaskRepo:
    """Write ``task`` as a git repository at ``path`` (must not exist): base, then fix."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "tests").mkdir()
    (path / MODULE).write_text(task.base_source)
    (path / TEST_FILE).write_text(task.test_source(task.cases[:VISIBLE]))
    (path / "README.md").write_text(f"# {task.name}\n\n{task.doc}\n\nRun `pytest tests`.\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", f"{task.name}: base")
    base = git(path, "rev-parse", "HEAD")
    (path / MODULE).write_text(task.fix_source)
    git(path, "commit", "-q", "-am", f"{task.name}: reference fix")
    fix = git(path, "rev-parse", "HEAD")
    git(path, "tag", "solution")
    git(path, "branch", "base", base)  # what an episode clones when history is scrubbed
    git(path, "checkout", "-q", "base")
    return TaskRepo(task, path, base, fix, pristine={TEST_FILE: task.test_source()})
