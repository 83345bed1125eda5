"""The one place that turns ``KafkaSettings`` into Kafka client settings.

Every producer, consumer, admin client and faust app in sipledger takes its
settings from here, so the embedded broker's quirks (see
/work/shared/notes/platform-facts.md) are handled once:

* Tansu holds a group join for session_timeout/2 and does not wake fetches on
  new data: short sessions and short fetch waits (client_profile "tansu").
* aiokafka's idempotent/transactional producer fails on Tansu: enabled on
  the "kafka" profile only (aiokafka producers and faust's, with acks=all),
  so a retried send is not written twice there.  Delivery is at-least-once
  either way; every record carries an ``id`` to dedupe on.
* ListOffsets(LATEST) is wrong after multi-record batches: faust gets
  single-record batches; our own tail readers do not trust the end offset alone.
* Topics are created explicitly with their partition count (``ensure_topics``;
  ``ensure_topics_sync`` for code without an event loop, on kafka-python).
  aiokafka asks brokers to auto-create every topic it looks up, and Tansu
  obliges with 4 partitions; after a broker restart the first client to look
  would recreate our topics with the wrong count.  Importing this module
  therefore makes aiokafka's metadata requests say "do not auto-create".
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiokafka.admin.client
import aiokafka.client
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from .config import ConfigError, KafkaSettings

log = logging.getLogger(__name__)

PRODUCER_LINGER_MS = 5
# Tansu: group join waits session_timeout/2; a fetch waits its full max wait
# even when data arrives, so the wait is the consumer's latency (about half of
# it on average) -- and, since every consumer polls that often, the idle cost
# of `up`: 15 ms kept an idle `up` at 54 % of a core, 50 ms at 27 %, for
# ~17 ms more per Kafka hop (a real Kafka broker wakes a fetch when data comes:
# the kafka profile keeps the clients' defaults).
TANSU_SESSION_TIMEOUT_MS = 6000
TANSU_HEARTBEAT_INTERVAL_MS = 1000
TANSU_FETCH_MAX_WAIT_MS = 50


class _NoAutoCreateMetadataRequest(MetadataRequest):
    def __init__(self, topics: list[str] | None = None,
                 allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


def _forbid_topic_auto_creation() -> None:
    # aiokafka (0.14) builds metadata requests through these module globals
    # and has no setting for it; a pinned-version test guards this.
    for module in (aiokafka.client, aiokafka.admin.client):
        if getattr(module, "MetadataRequest", None) is None:
            raise ImportError(f"{module.__name__}.MetadataRequest not found: "
                              "aiokafka changed, revisit topic auto-creation")
        module.MetadataRequest = _NoAutoCreateMetadataRequest


_forbid_topic_auto_creation()


def bootstrap_servers(settings: KafkaSettings) -> str:
    servers = settings.bootstrap_servers.strip()
    if not servers:
        raise ConfigError("kafka.bootstrap_servers is empty "
                          "(embedded mode fills it in once the broker has started)")
    return servers


def connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Address and security settings shared by every aiokafka client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        kwargs.update(sasl_mechanism=settings.sasl_mechanism,
                      sasl_plain_username=settings.sasl_username,
                      sasl_plain_password=settings.sasl_password)
    if settings.security_protocol.endswith("SSL"):
        kwargs["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile or None)
    return kwargs


def producer_kwargs(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaProducer``."""
    kwargs = connection_kwargs(settings)
    kwargs.update(
        acks="all",                  # every in-sync replica has it (a single broker: as soon as it has it)
        # a retry after a lost answer is not written twice; fails at start on Tansu
        enable_idempotence=settings.client_profile == "kafka",
        linger_ms=PRODUCER_LINGER_MS,
        compression_type=None,
    )
    kwargs.update(overrides)
    return kwargs


def consumer_kwargs(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaConsumer`` (topics not included)."""
    kwargs = connection_kwargs(settings)
    if settings.client_profile == "tansu":
        kwargs.update(session_timeout_ms=TANSU_SESSION_TIMEOUT_MS,
                      heartbeat_interval_ms=TANSU_HEARTBEAT_INTERVAL_MS,
                      fetch_max_wait_ms=TANSU_FETCH_MAX_WAIT_MS)
    kwargs.update(overrides)
    return kwargs


def faust_settings(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` (broker, credentials, producer, sessions).

    faust hard-codes its consumer's fetch_max_wait_ms (1500): build faust apps
    with ``faust_app``, which overrides it on the "tansu" profile (and makes
    the producer idempotent on the "kafka" profile, which faust has no setting for)."""
    brokers = [server.strip() for server in bootstrap_servers(settings).split(",") if server.strip()]
    app: dict[str, Any] = {
        "broker": ";".join(f"kafka://{server}" for server in brokers),
        "producer_acks": -1,
        # the changelog topics faust creates: as safe as ours (min.insync.replicas
        # above a topic's replication would refuse every acks=all write to it)
        "topic_replication_factor": settings.replication_factor,
        "producer_linger": PRODUCER_LINGER_MS / 1000,
        "producer_compression_type": None,
    }
    if settings.security_protocol != "PLAINTEXT":
        app["broker_credentials"] = _faust_credentials(settings)
    if settings.client_profile == "tansu":
        app.update(broker_session_timeout=TANSU_SESSION_TIMEOUT_MS / 1000,
                   broker_heartbeat_interval=TANSU_HEARTBEAT_INTERVAL_MS / 1000,
                   # bytes: every record its own batch, so ListOffsets(LATEST)
                   # is right and changelog recovery does not stop early
                   producer_max_batch_size=1)
    return app


def faust_app(app_id: str, settings: KafkaSettings, **conf: Any) -> Any:
    """A ``faust.App`` configured by ``faust_settings(settings)`` (``conf`` on top).

    faust (0.15) builds its aiokafka consumer with ``fetch_max_wait_ms=1500``
    hard-coded (faust/transport/drivers/aiokafka.py, ``_create_worker_consumer``)
    and has no setting for it.  On Tansu a fetch waits its full max wait even
    when data is there, so that is up to 1.5 s per fetch.  On the "tansu"
    profile the app returned here uses a transport whose consumer gets
    ``TANSU_FETCH_MAX_WAIT_MS`` instead; the "kafka" profile is plain faust.

    Also on "tansu": table recovery asks for changelog end offsets, which
    Tansu's ListOffsets gets wrong after multi-record batches; this app's
    consumer corrects them (``tansu_end_offsets``), so its producer batches
    normally instead of ``faust_settings``' single-record batches."""
    app_conf = faust_settings(settings)
    tansu = settings.client_profile == "tansu"
    if tansu:
        # this app's recovery reads true end offsets (tansu_end_offsets), so
        # its producer may batch: single-record batches cost ~10x throughput
        app_conf.pop("producer_max_batch_size", None)
    app_class = _faust_app_class()
    app = app_class(app_id, **{**app_conf, **conf})
    app.idempotent_producer = settings.client_profile == "kafka"
    if tansu:
        app.fetch_max_wait_ms = TANSU_FETCH_MAX_WAIT_MS
        app.tansu_settings = settings
    return app


async def tansu_end_offsets(settings: KafkaSettings, ends: dict, *, timeout: float = 10.0) -> dict:
    """Correct end offsets as Tansu's ListOffsets(LATEST) reports them.

    Tansu answers the base offset of the partition's last record batch + 1,
    short of the end when that batch holds several records.  A fetch from
    just before that offset returns the last batch, and fetch responses carry
    the right high watermark: that is the end.  ``ends`` maps TopicPartition-like
    (topic, partition) tuples to ListOffsets answers; the result has the same
    keys.  On timeout the ListOffsets answers are returned (and logged)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    result = dict(ends)
    todo = {TopicPartition(tp[0], tp[1]): tp for tp, end in ends.items() if end and end > 0}
    if not todo:
        return result
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings, enable_auto_commit=False, group_id=None))
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, original in todo.items():
            consumer.seek(tp, ends[original] - 1)
        pending = set(todo)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            await consumer.getmany(*pending, timeout_ms=100, max_records=1)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    result[todo[tp]] = max(highwater, ends[todo[tp]])
                    pending.discard(tp)
        if pending:
            log.warning("no high watermark for %s within %gs: using ListOffsets' end",
                        sorted(pending), timeout)
    finally:
        await consumer.stop()
    return result


_FAUST_APP_CLASS: Any = None


def _faust_app_class() -> Any:
    """faust.App with an overridable consumer fetch wait (built on first use:
    importing faust is heavy and only processors need it)."""
    global _FAUST_APP_CLASS
    if _FAUST_APP_CLASS is not None:
        return _FAUST_APP_CLASS
    import faust
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        _assignments = 0

        async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> Any:
            # faust drops messages fetched before a rebalance by comparing
            # generation ids; Tansu answers every join with generation 0, so
            # without this a fetch from before a broker restart went on being
            # processed after it and set faust's read offsets to the old
            # broker's (higher) ones: the new broker's records below them were
            # dropped (issue 15: the stale-offset loss window).  Every
            # assignment gets a generation of its own.
            self._assignments += 1
            generation = max(generation_id, self._assignments)
            self.app.consumer_generation_id = generation
            return await super().on_partitions_assigned(assigned, generation)

        async def _highwaters(self, partitions: Any) -> Any:
            # table recovery reads changelogs up to these: see tansu_end_offsets
            ends = await super()._highwaters(partitions)
            settings = getattr(self.app, "tansu_settings", None)
            if settings is None or self.consumer.in_transaction:
                return ends
            return await tansu_end_offsets(settings, dict(ends))

        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            wait = getattr(self.app, "fetch_max_wait_ms", None)
            if wait is not None:
                # aiokafka 0.14 keeps it here until start() builds its Fetcher;
                # a pinned-version test guards the attribute.
                if not hasattr(consumer, "_fetch_max_wait_ms"):
                    raise RuntimeError("aiokafka changed: AIOKafkaConsumer._fetch_max_wait_ms "
                                       "is gone, revisit the faust fetch wait override")
                consumer._fetch_max_wait_ms = int(wait)
            return consumer

    class TansuConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class IdempotentProducer(faust_aiokafka.Producer):
        # faust (0.15) enables idempotence only inside transactions (exactly_once)
        def _settings_extra(self) -> Any:
            extra = dict(super()._settings_extra())
            if getattr(self.app, "idempotent_producer", False):
                extra.update(acks="all", enable_idempotence=True)
            return extra

    class Transport(faust_aiokafka.Transport):
        Consumer = TansuConsumer

    class KafkaTransport(faust_aiokafka.Transport):
        Producer = IdempotentProducer

    class App(faust.App):
        fetch_max_wait_ms: int | None = None
        tansu_settings: KafkaSettings | None = None
        idempotent_producer: bool = False

        def _new_transport(self) -> Any:
            if self.fetch_max_wait_ms is not None:
                return Transport(self.conf.broker_consumer, self)
            if self.idempotent_producer:
                return KafkaTransport(self.conf.broker_consumer, self)
            return super()._new_transport()

    _FAUST_APP_CLASS = App
    return App


def _faust_credentials(settings: KafkaSettings) -> Any:
    import faust  # heavy; only processors that use faust pay for it

    ssl_context = (create_ssl_context(cafile=settings.ssl_cafile or None)
                   if settings.security_protocol.endswith("SSL") else None)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.sasl_username,
                                     password=settings.sasl_password,
                                     mechanism=settings.sasl_mechanism,
                                     ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


async def ensure_topics(settings: KafkaSettings, topics: dict[str, int], *,
                        timeout: float = 10.0) -> dict[str, int]:
    """Create each topic with its partition count unless it exists already.

    Returns the partition count each topic actually has.  An existing topic
    keeps its count (Tansu cannot add partitions): a mismatch is logged.
    Raises on a broker that cannot be reached within ``timeout``."""
    async with _admin_client(settings, timeout) as admin:
        await _create_missing(admin, settings, topics)
        counts = await _wait_for_partition_counts(admin, list(topics))
    _warn_mismatches(topics, counts)
    return counts


def ensure_topics_sync(settings: KafkaSettings, topics: dict[str, int], *,
                       timeout: float = 10.0) -> dict[str, int]:
    """``ensure_topics`` for code without an event loop (`up`, CLI, fixtures).

    kafka-python's ``KafkaAdminClient`` is synchronous (its I/O runs on a
    thread of its own), so nothing here needs an event loop; its metadata
    requests never ask for auto-creation.  Same contract as ``ensure_topics``."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError
    from kafka.errors import for_code as sync_error_for_code

    timeout_ms = int(timeout * 1000)
    admin = KafkaAdminClient(**sync_connection_kwargs(settings), client_id="sipledger-admin",
                             request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    try:
        names = list(topics)
        created = admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": settings.replication_factor}
             for name, partitions in topics.items()},
            timeout_ms=timeout_ms, raise_errors=False)
        for topic in created["topics"]:
            code = topic["error_code"]
            if code not in (0, TopicAlreadyExistsError.errno):
                error: type[KafkaError] = sync_error_for_code(code)
                raise error(f"creating topic {topic['name']}: {topic.get('error_message') or ''}".rstrip(": "))
        # a created topic can take a moment to show in metadata with leaders
        admin.wait_for_topics(names, timeout_ms=timeout_ms)
        counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()
    _warn_mismatches(topics, counts)
    return counts


def sync_connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Address and security settings for kafka-python clients (``connection_kwargs``' twin:
    the libraries name the certificate setting differently)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        kwargs.update(sasl_mechanism=settings.sasl_mechanism,
                      sasl_plain_username=settings.sasl_username,
                      sasl_plain_password=settings.sasl_password)
    if settings.security_protocol.endswith("SSL") and settings.ssl_cafile:
        kwargs["ssl_cafile"] = settings.ssl_cafile
    return kwargs


def _warn_mismatches(topics: dict[str, int], counts: dict[str, int]) -> None:
    for name, wanted in topics.items():
        if counts[name] != wanted:
            log.warning("topic %s has %d partitions, %d configured: "
                        "it existed before; delete and recreate it to change",
                        name, counts[name], wanted)


async def _create_missing(admin: AIOKafkaAdminClient, settings: KafkaSettings,
                          topics: dict[str, int]) -> None:
    response = await admin.create_topics(
        [NewTopic(name, partitions, settings.replication_factor)
         for name, partitions in topics.items()])
    for name, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"creating topic {name}")


async def _wait_for_partition_counts(admin: AIOKafkaAdminClient,
                                     names: list[str]) -> dict[str, int]:
    # A created topic can take a moment to show in metadata with leaders.
    while len(counts := await _ready_partition_counts(admin, names)) < len(names):
        await asyncio.sleep(0.05)
    return counts


async def _ready_partition_counts(admin: AIOKafkaAdminClient,
                                  names: list[str]) -> dict[str, int]:
    """Partition counts of those topics that exist with a leader for every partition."""
    described = await admin.describe_topics(names)
    return {t["topic"]: len(t["partitions"]) for t in described
            if t["error_code"] == 0 and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])}


async def topic_partitions(settings: KafkaSettings, topic: str, *,
                           timeout: float = 5.0) -> int | None:
    """How many partitions ``topic`` has, or None while it does not exist
    (looking does not create it)."""
    async with _admin_client(settings, timeout) as admin:
        return (await _ready_partition_counts(admin, [topic])).get(topic)


@contextlib.asynccontextmanager
async def _admin_client(settings: KafkaSettings, timeout: float) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; everything inside must finish within ``timeout``."""
    admin = AIOKafkaAdminClient(**connection_kwargs(settings),
                                request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            yield admin
    finally:
        await admin.close()
