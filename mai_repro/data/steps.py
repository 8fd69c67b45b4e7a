"""A pipeline of steps over documents, datatrove-style, with every document accounted for.

A *step* takes one document and returns it (possibly with its text changed, e.g. PII
scrubbed) or a :class:`Removal` naming why it goes. :func:`run_steps` applies steps in order
to a batch and records, for every input document, exactly one fate: kept, or removed by one
step for one reason. :class:`Ledger` holds those fates and the per-step statistics, and merges
across shards. ``inputs == kept + sum(removals)`` holds by construction; what catches a lost
document is :meth:`Ledger.check` against an independent enumeration of the inputs (for the
raw sample, data/MANIFEST): every enumerated input must have a fate.

Shards run through an executor (:func:`map_shards`): in-process, a local process pool, or Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Removal:
    """Why a document leaves the corpus (``reason`` is a short stable key, ``detail`` free text)."""

    reason: str
    detail: str = ""


@dataclass
class Step:
    """A named per-document step. ``fn(doc)`` returns the document (maybe changed) or a Removal.

    ``counters`` lets a step count things it did without removing anything (PII found, say):
    ``fn`` may return ``(doc, {"email": 2})``.
    """

    name: str
    fn: Callable[[Any], Any]


@dataclass
class StepStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    modified: int = 0
    removed: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)

    def merge(self, other: StepStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.modified += other.modified
        self.removed.update(other.removed)
        self.counters.update(other.counters)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "docs_in": self.docs_in, "docs_out": self.docs_out,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "modified": self.modified, "removed": dict(self.removed),
                "counters": dict(self.counters)}


@dataclass
class Fate:
    """One input document's fate. ``step``/``reason`` are None for kept documents."""

    id: str
    family: str
    bytes: int
    kept: bool
    step: str | None = None
    reason: str | None = None
    detail: str = ""
    count: int = 1  # inputs this fate stands for (an archive's unread rest: many)


@dataclass
class Ledger:
    """Fates of every input document and statistics per step, mergeable across shards."""

    fates: list[Fate] = field(default_factory=list)
    stats: dict[str, StepStats] = field(default_factory=dict)

    def stat(self, name: str) -> StepStats:
        if name not in self.stats:
            self.stats[name] = StepStats(name)
        return self.stats[name]

    def merge(self, other: Ledger) -> Ledger:
        self.fates.extend(other.fates)
        for name, s in other.stats.items():
            self.stat(name).merge(s)
        return self

    def record_removed(self, doc_id: str, family: str, nbytes: int, step: str, reason: str,
                       detail: str = "", count: int = 1) -> None:
        self.fates.append(Fate(doc_id, family, nbytes, False, step, reason, detail, count))

    def removals(self) -> Counter:
        """(step, reason) -> documents removed."""
        out: Counter = Counter()
        for f in self.fates:
            if not f.kept:
                out[(f.step, f.reason)] += f.count
        return out

    @property
    def n_inputs(self) -> int:
        return sum(f.count for f in self.fates)

    @property
    def n_kept(self) -> int:
        return sum(f.kept for f in self.fates)

    def check(self, expected: Iterable[str] | None = None) -> None:
        """Every input has exactly one fate: inputs == kept + sum of removals.

        ``expected`` is an enumeration of the inputs made independently of the readers and
        steps (data/MANIFEST's document ids): per source (the id up to its first ``:``), the
        inputs with a fate, counted with their ``count``, must number exactly the enumerated
        ones. Without it a document that nobody recorded cannot be noticed.
        """
        ids = [f.id for f in self.fates]
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        if dupes:
            raise AssertionError(f"documents with more than one fate: {dupes[:5]}")
        removed = sum(self.removals().values())
        if self.n_inputs != self.n_kept + removed:
            raise AssertionError(f"{self.n_inputs} inputs != {self.n_kept} kept + "
                                 f"{removed} removed")
        if expected is None:
            return
        expected = list(expected)
        want = Counter(_source_of(i) for i in expected)
        have: Counter = Counter()
        for f in self.fates:
            have[_source_of(f.id)] += f.count
        problems = []
        for src in sorted(set(want) | set(have)):
            if want[src] != have[src]:
                fated = set(ids)
                lost = [i for i in expected if _source_of(i) == src and i not in fated][:3]
                problems.append(f"{src}: {want[src]} enumerated, {have[src]} with a fate"
                                + (f" (none for {', '.join(lost)})" if lost else ""))
        if problems:
            raise AssertionError(f"the ledger does not account for the enumerated inputs: "
                                 f"{'; '.join(problems[:5])}")


def _source_of(doc_id: str) -> str:
    """The source an input id belongs to: ``<family>/<file>`` of ``<family>/<file>:<path>``."""
    return doc_id.split(":", 1)[0]


def _size(doc: Any) -> int:
    return len(doc.text.encode("utf-8", "surrogatepass"))


def run_steps(docs: Iterable[T], steps: Sequence[Step], ledger: Ledger | None = None,
              ) -> tuple[list[T], Ledger]:
    """Apply ``steps`` in order; return the kept documents and the ledger of this batch.

    Kept documents are *not* given a fate here: a later phase may still remove them. Call
    :func:`finish` when no step remains.
    """
    ledger = ledger if ledger is not None else Ledger()
    kept: list[T] = []
    for doc in docs:
        current: Any = doc
        for step in steps:
            st = ledger.stat(step.name)
            st.docs_in += 1
            st.bytes_in += _size(current)
            out = step.fn(current)
            if isinstance(out, tuple):
                out, counts = out
                st.counters.update(counts)
            if isinstance(out, Removal):
                st.removed[out.reason] += 1
                ledger.record_removed(current.id, current.family, _size(doc), step.name,
                                      out.reason, out.detail)
                current = None
                break
            if out.text != current.text:
                st.modified += 1
            st.docs_out += 1
            st.bytes_out += _size(out)
            current = out
        if current is not None:
            kept.append(current)
    return kept, ledger


def apply_removals(docs: Sequence[T], removals: dict[str, Removal], step: str,
                   ledger: Ledger) -> list[T]:
    """A global step's decisions (e.g. dedup), applied and recorded like any other step."""
    st = ledger.stat(step)
    kept = []
    for doc in docs:
        st.docs_in += 1
        st.bytes_in += _size(doc)
        r = removals.get(doc.id)
        if r is None:
            st.docs_out += 1
            st.bytes_out += _size(doc)
            kept.append(doc)
        else:
            st.removed[r.reason] += 1
            ledger.record_removed(doc.id, doc.family, _size(doc), step, r.reason, r.detail)
    return kept


def finish(docs: Iterable[Any], ledger: Ledger) -> Ledger:
    """Record the survivors as kept (they passed every step); the ledger is then complete."""
    for doc in docs:
        ledger.fates.append(Fate(doc.id, doc.family, _size(doc), True))
    return ledger


# ---------------------------------------------------------------------------------------------
# Executors: the same map over shards in-process, in a local process pool, or on Ray.

ExecutorKind = Literal["serial", "local", "ray"]


def map_shards(fn: Callable[[T], R], shards: Sequence[T], executor: ExecutorKind = "local",
               workers: int = 2, progress: bool = True, desc: str = "shards") -> list[R]:
    """``[fn(s) for s in shards]``, in order, through the chosen executor.

    ``fn`` and the shards must be picklable for "local" and "ray" (a module-level function
    and plain data). Ray is an optional extra (``pip install ray``); it connects to a running
    cluster when RAY_ADDRESS is set, else starts a local instance.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(shards), desc=desc, disable=not progress, leave=False)
    try:
        if executor == "serial" or workers <= 1 or len(shards) <= 1:
            out = []
            for s in shards:
                out.append(fn(s))
                bar.update()
            return out
        if executor == "local":
            with cf.ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(fn, s) for s in shards]
                for _ in cf.as_completed(futures):
                    bar.update()
                return [f.result() for f in futures]
        if executor == "ray":
            return _map_ray(fn, shards, workers, bar)
        raise ValueError(f"unknown executor {executor!r}; allowed: serial, local, ray")
    finally:
        bar.close()


def _map_ray(fn: Callable[[T], R], shards: Sequence[T], workers: int, bar: Any) -> list[R]:
    try:
        import ray
    except ImportError as e:
        raise ImportError("executor 'ray' needs the optional extra: pip install ray") from e
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        remote = ray.remote(fn)
        refs = [remote.remote(s) for s in shards]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
        return ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
