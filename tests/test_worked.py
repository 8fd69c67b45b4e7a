"""Procedural worked solutions for mid-training (issue 22 item 1): correct, deterministic,
spanning the RL difficulties, free of RL held-out problems, and never in pre-training."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from mai_repro import artifacts, config
from mai_repro.data import tokenizer as toklib
from mai_repro.rl import tasks, worked
from mai_repro.stages import midtraining as midtrain

ROOT = Path(__file__).resolve().parents[1]


# -- every text is right ---------------------------------------------------------------------

_SIDE = re.compile(r"[-\dx(][\d\s+\-*/()x]*")


def _value(expr: str, x: int) -> float:
    return eval(expr.replace("x", f"({x})"), {"__builtins__": {}})  # noqa: S307 - test digits


def _check_equations(text: str, answer: int) -> int:
    """Evaluate every equation chain the text writes (x = the answer); returns how many."""
    n = 0
    for line in text.splitlines():
        for seg in re.split(r"[:;,]\s|\.\s|\.$", line):
            sides = seg.split("=")
            if len(sides) < 2:
                continue
            exprs = []
            for i, side in enumerate(sides):
                found = _SIDE.findall(side)
                assert found, (seg, text)
                exprs.append((found[-1] if i == 0 else found[0]).strip())
            values = [_value(e, answer) for e in exprs]
            assert all(v == values[0] for v in values), (seg, values, text)
            n += 1
    return n


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3, 4])
def test_every_step_and_answer_is_right(difficulty):
    texts = worked.generate(90, difficulties=(difficulty,), seed=5)
    assert {w.kind for w in texts} == set(worked.WORKED_KINDS)
    for w in texts:
        assert w.text.startswith(w.question + "\n")
        assert tasks.extract_answer(w.text) == w.answer  # the RL tasks' answer line
        q = w.question
        if w.kind == "linear":  # substitute the answer back into the equation
            lhs, rhs = q.removeprefix("Solve for x: ").rstrip(".").split(" = ")
            assert _value(lhs, w.answer) == int(rhs)
        else:
            assert _value(q.split(" ", 1)[1].rstrip("."), 0) == w.answer
        assert _check_equations(w.text, w.answer) >= 1


@pytest.mark.parametrize("difficulty", [0, 1, 2])
def test_addsub_worked_solutions_are_right_and_column_steps_are_not_banned(difficulty):
    texts = worked.generate(60, difficulties=(difficulty,), kinds=("addsub",), seed=5)
    assert {w.kind for w in texts} == {"addsub"}
    for w in texts:
        assert " * " not in w.text
        assert tasks.extract_answer(w.text) == w.answer
        assert _check_equations(w.text, w.answer) >= 1
    # banning two-digit problems leaves the one-digit facts their columns are made of
    held = tasks.generate(64, kinds=("addsub",), difficulty=1, seed=0, split="eval")
    keys = worked.heldout_keys(tasks.question(t) for t in held)
    kept, removed = worked.generate_counted(400, difficulties=(0, 1), kinds=("addsub",),
                                            seed=0, exclude=keys)
    assert 0 < removed < 400
    assert not worked.contaminated([w.text for w in kept], keys)
    assert any(w.difficulty == 0 for w in kept)


def test_a_wrong_step_is_caught():
    text = "Compute 47 + 38.\nOnes: 7 + 8 = 15. Write 5, carry 1.\nTens: 4 + 3 + 1 = 9.\nAnswer: 85"
    with pytest.raises(AssertionError):
        _check_equations(text, 85)


def test_worked_examples_read_like_a_textbook():
    assert worked.column_addition(347, 589) == [
        "Add the digits column by column, from the right.",
        "Ones: 7 + 9 = 16. Write 6, carry 1.",
        "Tens: 4 + 8 + 1 = 13. Write 3, carry 1.",
        "Hundreds: 3 + 5 + 1 = 9. Write 9.",
        "So 347 + 589 = 936."]
    lines, v = worked.worked_expression("3 + (4 - 1) * 5")
    assert v == 18 and lines == ["Brackets first: 4 - 1 = 3. Now we have 3 + 3 * 5.",
                                 "Multiply: 3 * 5 = 15. Now we have 3 + 15.",
                                 "Add: 3 + 15 = 18."]
    lines, x = worked.worked_linear(3, 7, 22)
    assert x == 5 and lines[-1] == "Check: 3*5 + 7 = 15 + 7 = 22."


def test_deterministic_and_distinct():
    a = worked.generate(200, seed=3)
    assert a == worked.generate(200, seed=3)
    assert a != worked.generate(200, seed=4)
    assert len({w.question for w in a}) == 200
    assert worked.generate(50, seed=3) == a[:50]  # a longer run extends a shorter one


# -- difficulty spans the RL tasks' ----------------------------------------------------------

@pytest.mark.parametrize("preset", ["smoke", "laptop", "gpu", "cluster"])
def test_difficulties_span_below_and_above_the_rl_tasks(preset):
    cfg = config.load(preset)
    rl = {*cfg.grpo.difficulties, cfg.grpo.eval_difficulty}
    mine = cfg.midtrain.procedural_difficulties
    assert min(mine) <= min(rl) and max(mine) > max(rl)
    if cfg.grpo.eval_difficulty > 0:
        assert min(mine) < cfg.grpo.eval_difficulty


def test_numbers_grow_with_difficulty():
    def biggest(d: int) -> int:
        return max(abs(int(n)) for w in worked.generate(60, difficulties=(d,), seed=0)
                   for n in re.findall(r"\d+", w.question))
    sizes = [biggest(d) for d in range(5)]
    assert sizes == sorted(sizes) and sizes[0] < 50 and sizes[-1] > 10_000


# -- decontamination -------------------------------------------------------------------------

def _heldout(preset: str) -> list[str]:
    cfg = config.load(preset)
    return worked.heldout_questions(cfg.grpo, cfg.distill, [cfg.seed])


@pytest.mark.parametrize("preset", ["smoke", "laptop", "laptop-worked"])
def test_no_rl_heldout_problem_in_the_procedural_texts(preset):
    held = _heldout(preset)
    keys = worked.heldout_keys(held)
    texts = [w.text for w in worked.generate(1500, seed=0, exclude=keys)]
    assert worked.contaminated(texts, keys) == []
    # an independent check: no held-out question verbatim (spaces aside). (The curation
    # stage's 8-gram decontaminator would flag every "Solve for x: -4*x ..." with the same
    # coefficient: n-grams are too coarse for short problems, hence identities.)
    flat = [re.sub(r"\s+", "", t) for t in texts]
    assert not any(re.sub(r"\s+", "", q) in t for q in held for t in flat)
    # the filter does work: without it, held-out problems do appear
    plain = [w.text for w in worked.generate(1500, seed=0)]
    assert len(worked.contaminated(plain, keys)) > 10


def test_heldout_questions_cover_the_climb_and_the_specialists():
    cfg = config.load("laptop")
    held = set(_heldout("laptop"))
    from mai_repro.rl.climb import task_sets
    assert {tasks.question(t) for t in task_sets(cfg.grpo, cfg.seed)[1]} <= held
    for kind in cfg.distill.specialists:
        c = config.load("laptop", {"grpo": {"kinds": [kind]}}).grpo
        assert {tasks.question(t) for t in task_sets(c, cfg.seed)[1]} <= held


def test_a_planted_heldout_problem_is_caught():
    held = _heldout("laptop")
    keys = worked.heldout_keys(held)
    linear = next(q for q in held if q.startswith("Solve"))
    clean = [w.text for w in worked.generate(200, seed=1, exclude=keys)]
    # the held-out problem solved, as the generator would write it
    planted = worked.solve("linear", 0, linear).text
    # a held-out question reworded (another verb, other spacing): identity, not n-grams
    a, op, b = re.fullmatch(r"Compute (\d+) ([-+*]) (\d+)\.",
                            next(q for q in held if q.startswith("Compute"))).groups()
    reworded = f"Evaluate {a}{op}{b}.\nAnswer: {eval(a + op + b)}"
    # ... and inside another text's working, as one step of a chain
    step = f"Compute 123 + 4.\nSo {a} {op} {b} = {eval(a + op + b)} and more.\nAnswer: 0"
    for plant in (planted, reworded, step):
        texts = [*clean[:100], plant, *clean[100:]]
        assert worked.contaminated(texts, keys) == [100], plant


def test_problem_identity_is_shared_across_wordings():
    assert worked.problem_key("Compute 7 + 5.") == worked.problem_key("Evaluate 7+5.")
    assert worked.problem_key("Solve for x: 7*x + 0 = 21.") == ("linear", 7, 0, 21)
    assert ("linear", 7, 0, 21) in worked.text_keys("so 7*x = 21.")
    assert ("linear", 7, 0, 22) not in worked.text_keys("7*x = 22 - 1.")
    with pytest.raises(ValueError, match="not a task question"):
        worked.problem_key("Hello.")


# -- into mid-training -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    sample = [w.text for w in worked.generate(200, seed=9)]
    return toklib.train(sample, vocab_size=toklib.MIN_VOCAB + 64)


def test_procedural_windows_pack_whole_texts_after_eot(tok):
    m = config.load("smoke", {"midtrain": {"contexts": [256, 512], "steps": [3, 2],
                                           "tokens_per_step": 1024}}).midtrain
    held = _heldout("smoke")
    windows, info = midtrain.procedural_windows(m, tok, held, seed=0)
    keys = worked.heldout_keys(held)
    assert info["heldout_problems"] == len(keys) and info["removed_heldout"] >= 0
    for c, rows in windows.items():
        assert rows.shape[1] == c + 1 and len(rows) >= 3
        assert (rows[:, 0] == tok.eot_id).all()  # every row starts at a text
        whole = [p for row in rows  # the last text of a row is cut
                 for p in tok.decode(row.tolist()).split(toklib.EOT)[1:-1]]
        assert len(whole) >= len(rows) and not worked.contaminated(whole, keys)
        assert all(tasks.extract_answer(p) is not None for p in whole)
    # no text twice in a stage's windows
    flat = windows[256][:, 1:].tolist()
    assert len({tuple(r) for r in flat}) == len(flat)


def test_pack_windows():
    rows = worked.pack_windows([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], 4, 0, 10)
    assert rows.tolist() == [[0, 1, 2, 3, 0], [0, 6, 7, 8, 9]]
    assert worked.pack_windows([[1]], 8, 0, 5).shape == (0, 9)


def test_mix_gives_the_procedural_part_its_share_of_stem_math():
    m = config.load("smoke").midtrain
    tokens = {"code": 100, "stem": 300, "math": 100, "general": 50, "multilingual": 150,
              midtrain.PROCEDURAL: 10}
    w = midtrain.mix_weights(m, tokens)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["stem"] + w["math"] + w[midtrain.PROCEDURAL] == pytest.approx(0.35)
    assert w[midtrain.PROCEDURAL] == pytest.approx(0.35 * m.procedural)
    assert w["code"] == pytest.approx(0.55)
    none = config.load("smoke", {"midtrain": {"procedural": 0.0}}).midtrain
    w0 = midtrain.mix_weights(none, tokens)
    assert w0[midtrain.PROCEDURAL] == 0 and w0["stem"] + w0["math"] == pytest.approx(0.35)


def test_config_validates_the_procedural_fields():
    assert config.load("smoke").midtrain.procedural == pytest.approx(0.5)
    with pytest.raises(Exception, match="procedural"):
        config.load("smoke", {"midtrain": {"procedural": 1.5}})
    with pytest.raises(Exception, match="procedural_difficulties"):
        config.load("smoke", {"midtrain": {"procedural_difficulties": []}})
    with pytest.raises(Exception, match="procedural_kinds"):
        config.load("smoke", {"midtrain": {"procedural_kinds": []}})
    with pytest.raises(Exception, match="procedural_kinds"):
        config.load("smoke", {"midtrain": {"procedural_kinds": ["poetry"]}})


def test_procedural_kinds_choose_what_mid_training_is_shown(tok):
    m = config.load("smoke", {"midtrain": {"contexts": [256], "steps": [4],
                                           "tokens_per_step": 1024,
                                           "procedural_kinds": ["addsub"],
                                           "procedural_difficulties": [0, 1]}}).midtrain
    _, info = midtrain.procedural_windows(m, tok, _heldout("smoke"), seed=0)
    assert info["kinds"] == ["addsub"] and info["difficulties"] == [0, 1]
    default = config.load("smoke").midtrain
    _, info = midtrain.procedural_windows(default, tok, _heldout("smoke"), seed=0)
    assert info["kinds"] == sorted(worked.WORKED_KINDS)


def test_the_bill_of_materials_labels_the_procedural_part():
    weights = {"code": 0.55, "stem": 0.1, "math": 0.075, "general": 0.1, "multilingual": 0.0,
               midtrain.PROCEDURAL: 0.175}
    records = [{"context": 64, "windows": {"code": 5, midtrain.PROCEDURAL: 3},
                "tokens_by_family": {"code": 640, "stem": 128, midtrain.PROCEDURAL: 320}}]
    rows = {r["part"]: r for r in midtrain.bill_of_materials(weights, records,
                                                             {"texts": 40})}
    assert set(rows) == {"code", "stem", "math", "general", midtrain.PROCEDURAL}
    proc = rows[midtrain.PROCEDURAL]
    assert proc["procedural"] is True and proc["group"] == "stem_math"
    assert proc["tokens"] == 320 and proc["texts"] == 40 and "program" in proc["source"]
    assert not any(r["procedural"] for p, r in rows.items() if p != midtrain.PROCEDURAL)
    assert "corpus" in rows["code"]["source"]


# -- never in pre-training -------------------------------------------------------------------

def _imports(module: str, seen: set[str]) -> set[str]:
    """``module`` and every mai_repro module it imports, transitively (static)."""
    if module in seen:
        return seen
    seen.add(module)
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                 if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            if name.startswith("mai_repro") and (
                    (ROOT / (name.replace(".", "/") + ".py")).exists()
                    or (ROOT / name.replace(".", "/") / "__init__.py").exists()):
                _imports(name, seen)
    return seen


@pytest.mark.parametrize("stage", ["curation", "tokenizer", "pretraining"])
def test_pretraining_inputs_never_hold_procedural_text(stage):
    reach = _imports(f"mai_repro.stages.{stage}", set())
    assert "mai_repro.rl.worked" not in reach
    assert "mai_repro.rl.worked" in _imports("mai_repro.stages.midtraining", set())


def test_pretraining_does_not_depend_on_the_procedural_share():
    a = config.load("smoke")
    b = config.load("smoke", {"midtrain": {"procedural": 0.0}})
    for stage in ("curation", "tokenizer", "pretraining"):
        assert artifacts.stage_hash(a, stage) == artifacts.stage_hash(b, stage)
    assert artifacts.stage_hash(a, "midtraining") != artifacts.stage_hash(b, "midtraining")


def test_windows_are_int64_rows():
    assert worked.pack_windows([[1, 2, 3, 4, 5]], 3, 0, 1).dtype == np.int64


def test_midtraining_is_rebuilt_when_the_rl_heldout_sets_change():
    base = config.load("smoke")
    for key, value in (("n_eval", 17), ("eval_difficulty", 1), ("kinds", ["linear"])):
        other = config.load("smoke", {"grpo": {key: value}})
        assert artifacts.stage_hash(base, "midtraining") != artifacts.stage_hash(other,
                                                                                "midtraining")
    same = config.load("smoke", {"grpo": {"lr": 3e-4}})
    assert artifacts.stage_hash(base, "midtraining") == artifacts.stage_hash(same, "midtraining")


def test_brackets_around_negative_numbers_only_after_an_operator():
    lines, v = worked.worked_expression("5 - (2 - 4 + 3)")
    assert v == 4 and lines == ["Brackets first: 2 - 4 = -2. Now we have 5 - (-2 + 3).",
                                "Brackets first: -2 + 3 = 1. Now we have 5 - 1.",
                                "Subtract: 5 - 1 = 4."]


def test_heldout_questions_cover_the_operation_specialists():
    """laptop-worked's specialists [add, sub] split the climb's held-out set: the questions
    mid-training is decontaminated against hold every one of theirs."""
    from mai_repro.stages import self_distillation as sd
    cfg = config.load("laptop-worked")
    held = set(worked.heldout_questions(cfg.grpo, cfg.distill, [cfg.seed]))
    _, sets = sd._specialist_sets(cfg.grpo, cfg.distill, cfg.seed)
    for kind in cfg.distill.specialists:
        assert sets[kind][1] and {tasks.question(t) for t in sets[kind][1]} <= held
