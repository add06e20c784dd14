"""Cards shown, counted per finding and ISO week without a database write per call.

Each worker keeps, in memory:

- the number of cards it returned per (service id, finding, ISO week) -- the finding is the
  card's ``source.topic.code``; a card without a topic counts under ``unknown``;
- the last :data:`CARDS_REMEMBERED` cards it returned, by uuid, with their finding (the newest
  of them not written yet), so that feedback (which carries only the card uuid) is attributed
  to its finding, even before the flush.

Every ``THERAPY_CDS_FEEDBACK_FLUSH_SECONDS`` (and at shutdown) a background task writes what
was gathered in one transaction (:class:`plugin.storage.SqlCardStore`: additive upserts, so
several workers add up), off the request path. A flush that fails (database unreachable) keeps
the counts for the next one; of the cards' findings at most :data:`CARDS_REMEMBERED` wait, the
oldest beyond that are dropped and their feedback counts under ``unknown``. A worker that is
killed (not stopped) loses what it gathered since its last flush: at most that many seconds.

Nothing about a patient is kept: card uuids (derived from the hook instance), finding ids,
weeks and counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice

from anyio import to_thread

from cds_hooks import CdsResponse, Invocation, ServiceRegistry
from cds_hooks.models import Card
from cds_hooks.service import CdsService
from plugin.storage import TOPIC_MAX, UNKNOWN_TOPIC, ShownCard, SqlCardStore, iso_week

logger = logging.getLogger("therapy_cds.cards_shown")

#: Card uuids each worker remembers with their finding (about 200 bytes each, so about 2 MB),
#: and the most that wait for a flush while the database cannot be reached.
CARDS_REMEMBERED = 10_000


class CardsShown:
    """One worker's tally of the cards it returned; :meth:`flush` writes it to ``store``."""

    def __init__(
        self,
        store: SqlCardStore,
        *,
        remember: int = CARDS_REMEMBERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.remember = remember
        self._clock = clock
        self._lock = threading.Lock()  # observe (event loop) against flush (a thread)
        self._flushing = threading.Lock()  # one flush at a time (periodic, then shutdown)
        self._counts: dict[tuple[str, str, str], int] = {}
        # The last `remember` cards, oldest first; the newest `_unwritten` of them are not in
        # the database yet. (OrderedDict: dropping the oldest is O(1); a plain dict finds its
        # first key by skipping every slot deleted before it.)
        self._recent: OrderedDict[str, ShownCard] = OrderedDict()
        self._unwritten = 0
        self._day = -1
        self._week = ""
        self.dropped = 0  # card findings dropped while the database was unreachable

    # ------------------------------------------------------------------ the request path

    def week(self) -> str:
        """The current ISO week (UTC), recomputed once a day."""
        now = self._clock()
        day = int(now // 86_400)
        if day != self._day:
            self._week = iso_week(datetime.fromtimestamp(now, UTC).date())
            self._day = day
        return self._week

    def observe(self, service_id: str, cards: Sequence[Card]) -> None:
        """Count one call's cards (a few dictionary updates; no I/O)."""
        if not cards:
            return
        week = self.week()
        with self._lock:
            counts, recent = self._counts, self._recent
            for card in cards:
                topic_coding = card.source.topic
                topic = topic_coding.code[:TOPIC_MAX] if topic_coding else UNKNOWN_TOPIC
                key = (service_id, topic, week)
                counts[key] = counts.get(key, 0) + 1
                uuid = card.uuid
                if uuid and uuid not in recent:  # a retried call's cards are known already
                    recent[uuid] = (uuid, service_id, topic, week)
                    self._unwritten += 1
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        recent = self._recent
        while len(recent) > self.remember:
            recent.popitem(last=False)
        if self._unwritten > len(recent):  # unwritten cards forgotten: their feedback is unknown
            self.dropped += self._unwritten - len(recent)
            self._unwritten = len(recent)

    def topic_of(self, card_uuid: str) -> str | None:
        """The finding of a card this worker returned recently, or None."""
        found = self._recent.get(card_uuid)
        return found[2] if found is not None else None

    def wrap(self, registry: ServiceRegistry) -> ServiceRegistry:
        """The same services, each counting the cards it returns."""
        return ServiceRegistry([self._counting(service) for service in registry])

    def _counting(self, service: CdsService) -> CdsService:
        handler = service.handler
        service_id = service.id
        observe = self.observe

        async def counted(invocation: Invocation) -> CdsResponse:
            response = await handler(invocation)
            if isinstance(response, CdsResponse):  # anything else is the layer's 500
                observe(service_id, response.cards)
            return response

        return replace(service, handler=counted)

    # ------------------------------------------------------------------ the flush

    def flush(self) -> int:
        """Write what was gathered in one transaction; returns the cards written. Blocking:
        run it off the event loop. On failure what was taken is put back, and the error
        raised."""
        with self._flushing:
            with self._lock:
                counts, self._counts = self._counts, {}
                taken, self._unwritten = self._unwritten, 0
                cards = list(islice(reversed(self._recent.values()), taken))
            if not counts and not cards:
                return 0
            try:
                self.store.add(counts, cards)
            except BaseException:
                self._put_back(counts, taken)
                raise
            return sum(counts.values())

    def _put_back(self, counts: Mapping[tuple[str, str, str], int], taken: int) -> None:
        """Counts are added back; the cards taken are the ones just older than those shown
        since, so they become unwritten again (as far as they are still remembered)."""
        with self._lock:
            for key, count in counts.items():
                self._counts[key] = self._counts.get(key, 0) + count
            self._unwritten += taken
            self._forget_oldest()

    def unflushed(self) -> int:
        """Cards counted and not yet written."""
        with self._lock:
            return sum(self._counts.values())

    # ------------------------------------------------------------------ the lifespan

    @asynccontextmanager
    async def flushing(self, every_seconds: float) -> AsyncIterator[None]:
        """Flush every ``every_seconds`` while the application runs, and once at shutdown
        (entered by the application's lifespan, so every worker does it)."""
        task = asyncio.create_task(self._flush_every(every_seconds))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await self._flush_logged("at shutdown")

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._flush_logged("periodic")

    async def _flush_logged(self, when: str) -> None:
        try:
            await to_thread.run_sync(self.flush)  # not abandoned when cancelled
        except Exception as exc:  # logged by type only: the message may name the database
            if when == "at shutdown":
                logger.error(
                    "cards-shown flush failed at shutdown (%s): %d card(s) shown not recorded",
                    type(exc).__name__,
                    self.unflushed(),
                )
            else:
                logger.warning(
                    "cards-shown flush failed (%s): %d card(s) kept for the next flush",
                    type(exc).__name__,
                    self.unflushed(),
                )


__all__ = ["CARDS_REMEMBERED", "CardsShown"]
