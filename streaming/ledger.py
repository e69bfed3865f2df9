"""Resume bookkeeping of one (rank, worker) partition: a small value and the rules it keeps.

A partition yields its planned items in order, each consumed once: delivered, or skipped
(`on_error="skip"`). Every skipped item is owed a substitute, a repeat of the last delivered
item, yielded right after the next delivered one, so the partition yields exactly as many
items as planned (a short rank would leave the others waiting in their next collective).
Substitutes, like the plan's own padding, carry `padded=True`.

`Ledger` is all a partition's resume state besides its plan: StatefulDataLoader saves it
with every batch, and a restarted worker given it yields exactly what the interrupted one
would have yielded next, substitutes included (it repeats the same item, by its position).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ResumeError, SampleError

T = TypeVar("T")


class NothingToPad(RuntimeError):
    """Items were skipped, but the partition delivered none to repeat in their place."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Planned:
    position: int  # in the epoch order
    padded: bool  # a repeat the plan added to make ranks equal


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ledger:
    consumed: int = 0  # planned items delivered or skipped (state key "yielded")
    owed: int = 0  # skipped items not yet replaced by a substitute
    last_good: int | None = None  # position of the last delivered planned item: what a substitute repeats
    skipped: tuple[tuple[str, int], ...] = ()  # skipped items by reason, sorted

    def delivered(self, position: int) -> Ledger:
        return dataclasses.replace(self, consumed=self.consumed + 1, last_good=position)

    def skip(self, reason: str) -> Ledger:
        counts = dict(self.skipped)
        counts[reason] = counts.get(reason, 0) + 1
        return dataclasses.replace(self, consumed=self.consumed + 1, owed=self.owed + 1, skipped=tuple(sorted(counts.items())))

    def substituted(self) -> Ledger:
        assert self.owed > 0 and self.last_good is not None, "a substitute needs a debt and an item to repeat"
        return dataclasses.replace(self, owed=self.owed - 1)

    def to_state(self) -> dict[str, Any]:
        return {"yielded": self.consumed, "owed": self.owed, "last_good": self.last_good, "skipped": dict(self.skipped)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ledger:
        """From a loader state (`to_state`'s fields); a ResumeError naming what is missing or
        not a count."""
        missing = [k for k in ("yielded", "owed", "last_good", "skipped") if k not in state]
        if missing:
            raise ResumeError(f"a loader state without {', '.join(missing)}: not one a VideoShardDataset saved whole")
        last_good = state["last_good"]
        try:
            ledger = cls(consumed=int(state["yielded"]), owed=int(state["owed"]),
                         last_good=None if last_good is None else int(last_good),
                         skipped=tuple(sorted((str(k), int(v)) for k, v in state["skipped"].items())))
        except (TypeError, ValueError, AttributeError):
            shown = {k: state[k] for k in ("yielded", "owed", "last_good", "skipped")}
            raise ResumeError(f"a loader state whose counts are not counts: {str(shown)[:200]}") from None
        if min(ledger.consumed, ledger.owed) < 0:
            raise ResumeError(f"a loader state with negative counts: {str(state)[:200]}")
        return ledger


@dataclasses.dataclass(frozen=True)
class Delivery(Generic[T]):
    item: T
    padded: bool
    ledger: Ledger  # the partition's state once this item is yielded
    substitute: bool = False  # a repeat standing in for a skipped item


END_ATTEMPTS = 3  # tries at a partition's last substitutes, when there is no later item to repeat instead


def deliver(planned: Iterable[Planned], build: Callable[[int], T], ledger: Ledger,
            on_skip: Callable[[SampleError], None]) -> Iterator[Delivery[T]]:
    """Every item of a partition: `planned` are its items not yet consumed (`ledger.consumed`
    of the plan already were), `build(position)` makes one or raises SampleError, and
    `on_skip(error)` decides: it raises to stop, or returns to skip the item. A substitute
    is built again from its bytes (nothing decoded is held), so it can fail too (a read that
    fails after its retries): `on_skip` sees that error and the debt stays, repaid after
    the next delivered item, or retried at the partition's end."""
    ledger = yield from _repay(ledger, build, on_skip)  # interrupted between an item and its substitutes
    for p in planned:
        try:
            item = build(p.position)
        except SampleError as exc:
            on_skip(exc)
            ledger = ledger.skip(exc.reason)
            continue
        ledger = ledger.delivered(p.position)
        yield Delivery(item, p.padded, ledger)
        del item  # hold no delivered item while building the next
        ledger = yield from _repay(ledger, build, on_skip)
    if ledger.owed and ledger.last_good is None:
        raise NothingToPad(f"every item of this partition ({ledger.consumed}) failed: nothing to pad with")
    for _ in range(END_ATTEMPTS):
        if not ledger.owed:
            return
        ledger = yield from _repay(ledger, build, on_skip)
    raise NothingToPad(f"{ledger.owed} substitute(s) owed at the end, but the item they repeat failed to build "
                       f"{END_ATTEMPTS} times")


def _repay(ledger: Ledger, build: Callable[[int], T], on_skip: Callable[[SampleError], None]):
    while ledger.owed and ledger.last_good is not None:
        try:
            item = build(ledger.last_good)
        except SampleError as exc:  # still owed: repaid after the next delivered item, or retried at the end
            on_skip(exc)
            return ledger
        ledger = ledger.substituted()
        yield Delivery(item, True, ledger, substitute=True)
        del item
    return ledger
