import pytest

from mai_repro.data.decontam import Decontaminator
from mai_repro.rl import tasks


@pytest.mark.parametrize("kind", tasks.ALL_KINDS)
@pytest.mark.parametrize("difficulty", [0, 2])
def test_answers_are_right(kind, difficulty):
    for t in tasks.generate(30, kinds=(kind,), difficulty=difficulty, seed=1):
        q = t.prompt.removesuffix(" " + tasks.INSTRUCTION)
        if kind == "linear":  # substitute the answer back into the equation
            lhs, rhs = q.removeprefix("Solve for x: ").rstrip(".").split(" = ")
            assert eval(lhs.replace("x", f"({t.answer})")) == int(rhs)
        else:
            assert eval(q.split(" ", 1)[1].rstrip(".")) == t.answer


def test_deterministic_distinct_and_splits_disjoint():
    a = tasks.generate(100, seed=3)
    assert a == tasks.generate(100, seed=3)
    assert len({t.prompt for t in a}) == 100
    ev = tasks.generate(100, seed=3, split="eval")
    assert not {t.prompt for t in a} & {t.prompt for t in ev}
    assert {t.kind for t in a} == set(tasks.KINDS)


def test_addsub_is_arithmetic_without_multiplication_and_outside_the_default_draw():
    ts = tasks.generate(200, kinds=("addsub",), difficulty=1, seed=0, split="eval")
    ops = {tasks.question(t).split()[2] for t in ts}
    assert ops == {"+", "-"}
    assert all(max(map(int, tasks.question(t)[8:-1].split(f" {tasks.question(t).split()[2]} ")))
               < 100 for t in ts)
    assert any(t.answer < 0 for t in ts)  # subtraction may go below zero
    # the default draw (and so the decontamination list of notebook 01) is unchanged
    assert "addsub" not in tasks.KINDS
    assert {t.kind for t in tasks.generate(30, seed=0)} == set(tasks.KINDS)
    assert len(tasks.generate(100, kinds=("addsub",), difficulty=1, seed=0, split="train")
               + ts) == 300
    assert not ({t.prompt for t in tasks.generate(200, kinds=("addsub",), difficulty=1, seed=0)}
                & {t.prompt for t in ts})


def test_difficulty_grows_numbers():
    def size(d):
        return sum(len(t.prompt) for t in tasks.generate(60, difficulty=d, seed=0))
    assert size(0) < size(2) < size(4)


@pytest.mark.parametrize("completion, expected", [
    ("Let me think. 2+2=4\nAnswer: 4", 4),
    ("Answer: -17  \n\n", -17),
    ("the answer is 4", None),
    ("Answer: 4\nbut wait", None),
    ("Answer: 4.5", None),
    ("", None),
])
def test_answer_format(completion, expected):
    assert tasks.extract_answer(completion) == expected


def test_is_correct():
    t = tasks.generate(1, kinds=("arithmetic",), seed=0)[0]
    assert tasks.is_correct(f"work\nAnswer: {t.answer}", t)
    assert not tasks.is_correct(f"Answer: {t.answer + 1}", t)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task kinds"):
        tasks.generate(1, kinds=("poetry",))
    with pytest.raises(ValueError, match="difficulty"):
        tasks.generate(1, difficulty=-1)
    with pytest.raises(ValueError, match="cannot draw"):
        tasks.generate(10_000, kinds=("arithmetic",), difficulty=0)


def test_decontamination_finds_planted_overlap():
    protected = ["Compute 37 + 45.",
                 "the quick brown fox jumps over the lazy dog near the river bank today"]
    d = Decontaminator(protected, n=8)
    assert d.match("Exercise 3. Compute 37 + 45. Then continue.")
    assert d.match("He saw THE QUICK brown fox jumps over the lazy dog, near the river")
    assert not d.match("Compute 37 + 46.")
    assert not d.match("the quick brown fox sleeps")
    assert not d.match("")


def test_decontamination_texts_cover_both_splits():
    texts = tasks.decontamination_texts(n_per_split=5, difficulties=(0,))
    assert len(texts) == 10 and not any(tasks.INSTRUCTION in t for t in texts)


# Issue 20: grading takes ASCII digits only and a bounded length.

@pytest.mark.parametrize("answer", ["1\u0663", "\u0661\u0663", "\uff11\uff13", "1\u09e9",
                                    "\U0001d7cf\U0001d7d1"])
def test_non_ascii_digits_are_not_an_answer(answer):
    task = tasks.Task("t", "arithmetic", 0, "q", 13)
    assert tasks.extract_answer(f"Answer: {answer}") is None
    assert not tasks.grade(f" {answer}", task)


def test_a_5000_digit_answer_is_wrong_not_an_error():
    task = tasks.Task("t", "arithmetic", 0, "q", 7)
    huge = "7" * 5000
    assert tasks.extract_answer(f"Answer: {huge}") is None  # int() would raise ValueError
    assert not tasks.grade(f" {huge}", task) and not tasks.grade(f" -{huge}", task)
    longest = "9" * tasks.MAX_ANSWER_DIGITS
    assert tasks.extract_answer(f"Answer: {longest}") == int(longest)
    assert tasks.extract_answer(f"Answer: 1{longest}") is None


def test_every_task_answer_fits_the_bound():
    for kind in tasks.KINDS:
        for t in tasks.generate(200, kinds=(kind,), difficulty=6, seed=0):
            assert len(str(abs(t.answer))) < tasks.MAX_ANSWER_DIGITS
            assert tasks.is_correct(f"Answer: {t.answer}", t)
