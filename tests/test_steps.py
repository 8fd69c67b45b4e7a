import sys
from dataclasses import dataclass, replace

import pytest

from mai_repro.data.steps import (
    Ledger,
    Removal,
    Step,
    apply_removals,
    batched,
    finish,
    map_shards,
    run_steps,
)


@dataclass(frozen=True)
class D:
    id: str
    family: str
    text: str


def too_short(doc):
    return Removal("too_short", f"{len(doc.text)} chars") if len(doc.text) < 5 else doc


def no_secrets(doc):
    n = doc.text.count("SECRET")
    return replace(doc, text=doc.text.replace("SECRET", "[X]")), {"secret": n}


def banned(doc):
    return Removal("banned_word") if "spam" in doc.text else doc


STEPS = [Step("length", too_short), Step("scrub", no_secrets), Step("words", banned)]


def corpus():
    return [D("a", "code", "hi"), D("b", "code", "hello SECRET world"),
            D("c", "math", "buy spam now"), D("d", "math", "a fine text SECRET SECRET"),
            D("e", "code", "another fine text")]


def test_every_document_gets_exactly_one_fate():
    kept, ledger = run_steps(corpus(), STEPS)
    ledger = finish(kept, ledger)
    ledger.check()
    assert ledger.n_inputs == 5 and ledger.n_kept == 3
    assert ledger.removals() == {("length", "too_short"): 1, ("words", "banned_word"): 1}
    assert [d.text for d in kept] == ["hello [X] world", "a fine text [X] [X]",
                                      "another fine text"]
    s = ledger.stats
    assert (s["length"].docs_in, s["length"].docs_out) == (5, 4)
    assert s["scrub"].modified == 2 and s["scrub"].counters["secret"] == 3
    assert s["words"].docs_in == 4 and s["words"].docs_out == 3
    removed = [f for f in ledger.fates if not f.kept]
    assert removed[0].detail == "2 chars"


def test_check_catches_a_lost_or_doubled_document():
    kept, ledger = run_steps(corpus(), STEPS)
    with pytest.raises(AssertionError, match="more than one fate"):
        finish(kept + kept[:1], ledger).check()
    kept, ledger = run_steps(corpus(), STEPS)
    ledger = finish(kept[1:], ledger)  # a kept document lost on the way
    ledger.check()  # inputs == kept + removed holds by construction: it cannot notice...
    with pytest.raises(AssertionError, match=f"none for {kept[0].id}"):
        ledger.check([d.id for d in corpus()])  # ...the independent enumeration does
    ledger.fates.append(ledger.fates[0].__class__("z", "code", 1, False, "s", "r"))
    with pytest.raises(AssertionError, match="z: 0 enumerated, 1 with a fate"):
        ledger.check([d.id for d in corpus()] + ["y"])  # a fate nobody enumerated


def test_shards_merge_to_the_same_ledger():
    whole_kept, whole = run_steps(corpus(), STEPS)
    finish(whole_kept, whole)
    merged = Ledger()
    for shard in batched(corpus(), 2):
        kept, ledger = run_steps(shard, STEPS)
        merged.merge(finish(kept, ledger))
    merged.check()
    assert merged.removals() == whole.removals()
    assert {k: v.as_dict() for k, v in merged.stats.items()} == {
        k: v.as_dict() for k, v in whole.stats.items()}


def test_global_step_is_recorded_like_any_step():
    docs, ledger = run_steps(corpus(), STEPS)
    docs = apply_removals(docs, {"d": Removal("near_duplicate", "of b")}, "dedup", ledger)
    finish(docs, ledger).check()
    assert ledger.removals()[("dedup", "near_duplicate")] == 1
    assert ledger.stats["dedup"].docs_in == 3 and ledger.stats["dedup"].docs_out == 2


def shard_job(shard):
    kept, ledger = run_steps([D(*x) for x in shard], STEPS)
    return finish(kept, ledger)


@pytest.mark.parametrize("executor", ["serial", "local", "ray"])
def test_executors_agree(executor):
    if executor == "ray":  # a local Ray instance; its workers cannot import pytest's modules
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    shards = [[("a", "code", "hi"), ("b", "code", "hello world")],
              [("c", "math", "spam spam"), ("d", "math", "fine text")]]
    ledgers = map_shards(shard_job, shards, executor=executor, workers=2, progress=False)
    merged = Ledger()
    for led in ledgers:
        merged.merge(led)
    merged.check()
    assert [f.id for f in merged.fates if f.kept] == ["b", "d"]


def test_unknown_executor():
    with pytest.raises(ValueError, match="allowed: serial, local, ray"):
        map_shards(len, [[1], [2]], executor="slurm", progress=False)
