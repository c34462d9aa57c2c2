"""The durable event log: interactions, customer and article changes, erasures, in one order.

The gateway's write API appends to it (:class:`EventLog`, acknowledged only once durable);
consumers read it in order (:class:`LogReader`): the near-real-time updater, and
``shoprec ingest events``, which folds it into the canonical tables for the next training.

Backends: :mod:`.sqlite` (embedded default, WAL + ``synchronous=FULL``, group commit) and
:mod:`.redis_streams` (Redis Streams on a Redis with AOF); :mod:`.records` holds what an entry
carries; :mod:`.log` the interfaces and :func:`open_event_log` / :func:`open_log_reader`.

Example::

    log = open_event_log("sqlite:///models/completejourney/events.db")   # in an event loop
    offsets = await log.append_events([Event(event_id="e1", type="purchase", ...)])
    await log.close()

    reader = open_log_reader("models/completejourney/events.db")
    for entry in reader.read_after(0, limit=100):
        entry.offset, entry.kind, entry.record
"""

from shoprec.events.log import (
    DEFAULT_DEDUPE_WINDOW_S,
    DEFAULT_LOG_FILE,
    DEFAULT_NAMESPACE,
    MAX_READ,
    Changed,
    Erased,
    EventLog,
    EventLogError,
    LogReader,
    log_backend,
    open_event_log,
    open_log_reader,
)
from shoprec.events.records import (
    ArticleFields,
    ArticleState,
    Customer,
    CustomerAttributes,
    EntryKind,
    Erasure,
    Event,
    EventType,
    LogEntry,
    customer_hash,
)

__all__ = [
    "DEFAULT_DEDUPE_WINDOW_S",
    "DEFAULT_LOG_FILE",
    "DEFAULT_NAMESPACE",
    "MAX_READ",
    "ArticleFields",
    "ArticleState",
    "Changed",
    "Customer",
    "CustomerAttributes",
    "EntryKind",
    "Erased",
    "Erasure",
    "Event",
    "EventLog",
    "EventLogError",
    "EventType",
    "LogEntry",
    "LogReader",
    "customer_hash",
    "log_backend",
    "open_event_log",
    "open_log_reader",
]
