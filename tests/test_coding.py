"""Coding tasks as RL problems: prompt, body extraction, a group graded in the sandbox."""

import pytest

from mai_repro.rl import coding, repos
from mai_repro.rl.aggregate import R_MIN
from mai_repro.rl.sandbox import Limits


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    task = repos.make_task(0, 1, seed=0)  # add(a, b)
    return repos.build_repo(task, tmp_path_factory.mktemp("coding") / task.name)


def test_prompt_shows_signature_doc_and_visible_examples_only(repo):
    p = coding.prompt(repo.task)
    assert p.startswith(f"def {repo.task.function}({repo.task.params}):")
    assert p.count("==") == repos.VISIBLE


def test_body_stops_at_the_first_line_outside_the_function():
    assert coding.body_from_text("    return a + b\n\ndef other():\n    pass") == \
        "    return a + b"
    assert coding.body_from_text("print('x')") == "    pass"


def test_a_group_gets_outcomes_rewards_and_hacking_attempts(repo):
    texts = [repo.task.fix_body, "    return 0", "    import os\n    os._exit(0)",
             "    while True:\n        pass"]
    g = coding.grade_group(repo, texts, limits=Limits(cpu_s=1, wall_s=2))
    assert g.correct == [True, False, False, False]
    assert g.rewards[0] > g.rewards[1] > R_MIN == g.rewards[2] == g.rewards[3]
    assert g.attempts == 2 and sum(g.reasons.values()) == 2
