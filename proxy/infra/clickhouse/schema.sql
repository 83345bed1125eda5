-- sipledger's ClickHouse schema: one text for both back ends, chdb (ClickHouse
-- 26.x, embedded) and clickhouse-server 18.16 (Debian).  Only SQL common to
-- both (see /work/shared/notes/platform-facts.md): no DateTime64, no CODEC,
-- no TTL, no LowCardinality (it needs a setting on 18.16), no ADD COLUMN IF NOT EXISTS.
--
-- Applied by cdr/store/migrate.py (`sipledger db migrate`, and at start):
--   * the statements before the first "-- migration" header run every time and
--     must be idempotent (the bookkeeping table);
--   * each "-- migration N: description" block runs once, in order, and is
--     recorded in schema_migrations with a checksum of its text; never edit an
--     applied block, add a new one.
-- Statements end with ";" at the end of a line.  Tables live in the database
-- named by [clickhouse] database (created by the back end when it opens).

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     UInt32,
    description String,
    checksum    String,
    applied_ms  UInt64
) ENGINE = ReplacingMergeTree(applied_ms)
ORDER BY version;

-- migration 1: cdr legs (cdr.records.CdrLeg, schema version 1)
-- One row per call leg.  (cdr_id, leg) is the identity: a leg inserted twice
-- (at-least-once delivery, replays) is one row after merges, and every query
-- deduplicates (FINAL, or the newest version per (cdr_id, leg) with LIMIT 1 BY)
-- so duplicates never show before the merge either.  The
-- newest copy (highest `version`, the sink's insert time) wins.
-- Times are UTC epoch milliseconds (0 = did not happen); `setup` is setup_ms
-- in whole seconds, as DateTime, for partitioning and partition pruning.
-- sip_code / sip_reason / disposition are this leg's outcome; call_* and
-- hangup_* the call's (identical on every leg of a CDR).
-- index_granularity 1024 (not 8192): pages of calls are fetched by cdr_id, a
-- random UUID, so each looked-up call costs one granule read.
-- caller_number / dialled_number are derived by the sink: the user part of
-- caller_uri / dialled without a leading "+" (prefix filters and grouping).
CREATE TABLE IF NOT EXISTS cdr (
    cdr_id            String,
    leg               UInt16,
    parent_leg        Int16,
    leg_cause         String,
    legs              UInt16,
    v                 UInt16,
    call_id           String,
    from_tag          String,
    to_tag            String,
    account           String,
    caller_uri        String,
    caller_number     String,
    caller_ip         String,
    caller_user_agent String,
    dialled           String,
    dialled_number    String,
    callee_uri        String,
    target            String,
    destination       String,
    gateway           String,
    domain            String,
    callee_user_agent String,
    setup             DateTime('UTC'),
    setup_ms          UInt64,
    ringing_ms        UInt64,
    answer_ms         UInt64,
    end_ms            UInt64,
    duration_ms       UInt64,
    billable_s        UInt32,
    pdd_ms            UInt32,
    sip_code          UInt16,
    sip_reason        String,
    disposition       String,
    call_sip_code     UInt16,
    call_sip_reason   String,
    call_disposition  String,
    hangup_by         String,
    hangup_reason     String,
    proxy             String,
    version           UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(setup)
ORDER BY (cdr_id, leg)
SETTINGS index_granularity = 1024;

-- The calls by setup time: leg 0's identity, for paging through calls newest
-- first (cdr is ordered by cdr_id, so a time range there prunes nothing).
-- Filled by the materialized view on every insert into cdr, whichever back end
-- or writer inserts; duplicates collapse like cdr's.
CREATE TABLE IF NOT EXISTS cdr_calls (
    setup          DateTime('UTC'),
    setup_ms       UInt64,
    cdr_id         String,
    account        String,
    caller_number  String,
    caller_ip      String,
    dialled_number String,
    version        UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(setup)
ORDER BY (setup_ms, cdr_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS cdr_calls_mv TO cdr_calls AS
SELECT setup, setup_ms, cdr_id, account, caller_number, caller_ip, dialled_number, version
FROM cdr
WHERE leg = 0;

-- migration 2: billing ledger events (billing.ledger.LedgerEvent, schema version 1)
-- A queryable copy of the billing service's durable ledger (SQLite, the source
-- of truth), fed from `ledger.events` by the API process' ledger sink and
-- repaired from SQLite when the memory-only broker lost records.  `seq` is the
-- event's position in the SQLite ledger: (account, seq) is the identity, so an
-- event inserted twice is one row after merges; queries deduplicate (FINAL or
-- LIMIT 1 BY seq).  Money is Decimal(18,6), never Float: `amount` as the event
-- states it, `balance_delta` / `reserved_delta` its signed effects.
CREATE TABLE IF NOT EXISTS ledger_events (
    seq            UInt64,
    id             String,
    account        String,
    kind           String,
    amount         Decimal(18,6),
    balance_delta  Decimal(18,6),
    reserved_delta Decimal(18,6),
    currency       String,
    ts             DateTime('UTC'),
    ts_ms          UInt64,
    call_id        String,
    cdr_id         String,
    leg            Int32,
    idem_key       String,
    step           UInt32,
    final          UInt8,
    paid_ms        UInt64,
    answer_ms      UInt64,
    number         String,
    plan           String,
    prefix         String,
    rate_name      String,
    gateway        String,
    duration_ms    UInt64,
    billed_s       UInt32,
    note           String,
    version        UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (account, seq);

-- migration 3: media columns of cdr legs (CdrLeg, issue 14: rtpengine media relay)
-- Per leg and direction, from the leg's latest media.stats: caller_* is what
-- the caller sent, callee_* what the callee sent.  lost / jitter / MOS come
-- from RTCP and are NULL when the phones sent none; 0 / '' everywhere when the
-- call was not relayed (rows stored before this migration read the same).
-- last_media_ms: the last RTP packet of either party (0 = none / unknown).
-- `lost` is signed: RTCP's cumulative loss goes negative with duplicates.
ALTER TABLE cdr
    ADD COLUMN caller_rtp_packets   UInt64 DEFAULT 0,
    ADD COLUMN caller_rtp_bytes     UInt64 DEFAULT 0,
    ADD COLUMN caller_rtp_errors    UInt64 DEFAULT 0,
    ADD COLUMN caller_rtp_lost      Nullable(Int64),
    ADD COLUMN caller_rtp_jitter_ms Nullable(UInt32),
    ADD COLUMN caller_rtp_mos_x10   Nullable(UInt8),
    ADD COLUMN callee_rtp_packets   UInt64 DEFAULT 0,
    ADD COLUMN callee_rtp_bytes     UInt64 DEFAULT 0,
    ADD COLUMN callee_rtp_errors    UInt64 DEFAULT 0,
    ADD COLUMN callee_rtp_lost      Nullable(Int64),
    ADD COLUMN callee_rtp_jitter_ms Nullable(UInt32),
    ADD COLUMN callee_rtp_mos_x10   Nullable(UInt8),
    ADD COLUMN media_relay          String DEFAULT '',
    ADD COLUMN last_media_ms        UInt64 DEFAULT 0;

-- migration 4: sip_trace (issue 16: SIP capture, docs/trace.md)
-- One row per SIP message a proxy worker received (direction 'in') or sent
-- ('out'), from the `sip.trace` topic (TraceRecord).  `id` names the capture:
-- (call_id, id) is the identity, so a record inserted twice is one row after
-- merges; queries deduplicate with LIMIT 1 BY id.  Time is `ts` (DateTime,
-- partitions by day) plus `ts_ms` (epoch milliseconds).  No TTL (18.16 has
-- none): the API process drops day partitions older than [trace] retention_days.
CREATE TABLE IF NOT EXISTS sip_trace (
    id         String,
    ts         DateTime('UTC'),
    ts_ms      UInt64,
    direction  String,
    transport  String,
    src_ip     String,
    src_port   UInt16,
    dst_ip     String,
    dst_port   UInt16,
    method     String,
    status     UInt16,
    call_id    String,
    cseq       String,
    node       String,
    worker     UInt16,
    raw        String
) ENGINE = ReplacingMergeTree(ts_ms)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (call_id, id);

-- migration 5: events, the durable event archive (issue 15, docs/operations.md)
-- Every record of `sip.events` (source 'sip'), `ledger.events` ('ledger') and
-- `call.control` ('control'), as published: `payload` is the record's JSON,
-- byte for byte, so a rebuild folds exactly what the processors saw.  Fed by
-- the API process' archiver (cdr/archive/sink.py), at least once: `id` (the
-- event id) is the identity; a copy archived twice is one row after merges and
-- every read deduplicates (LIMIT 1 BY id).  Partitions by month of the event's
-- own time; sorted by day, then call, then time: one call's events are
-- contiguous (rebuild, per-call reads) and a time range prunes to its days.
-- Ledger events carry their call_id when they have one ('' otherwise) and
-- their account.  No CODEC (18.16 has none): chdb compresses with LZ4, a
-- server with what its <compression> config says (zstd recommended).
CREATE TABLE IF NOT EXISTS events (
    ts       DateTime('UTC'),
    ts_ms    UInt64,
    source   String,
    type     String,
    id       String,
    call_id  String,
    account  String,
    payload  String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (toDate(ts), call_id, ts_ms, id);

-- migration 6: cdr_call, one row per call for statistics and filtered lists (issue 19)
-- The call summary the API computes from a call's legs (cdr/store/queries.py),
-- stored: statistics and lists filtered by outcome read one narrow row per
-- call, sorted by setup time (a time range prunes to its granules), instead
-- of every leg of the month grouped by cdr_id (a 10M-leg month took seconds).
-- Written by CdrStore.insert_legs next to the legs (cdr/store/rows.py:
-- call_row), from the newest copy of each leg; a call is summarised once its
-- leg 0 is stored.  A call summarised again (duplicates, late media, more
-- legs) replaces its row (newest version); queries read it with FINAL.  The
-- identity is (setup_ms, cdr_key), cdr_key = cityHash64(cdr_id): FINAL merges
-- on two integers instead of a 36-byte string (4x faster here); two calls
-- would have to share the millisecond and the 64-bit hash to collide.  disposition / sip_code are the call's
-- (call_disposition / call_sip_code); duration_ms is the deciding leg's (the
-- answered one, else the highest-numbered); pdd_ms the call's post-dial delay.
-- leg_*: each leg's own values in leg order, for statistics per gateway
-- (ARRAY JOIN).  The INSERT below summarises the legs stored before.
CREATE TABLE IF NOT EXISTS cdr_call (
    setup            DateTime('UTC'),
    setup_ms         UInt64,
    cdr_id           String,
    cdr_key          UInt64 DEFAULT cityHash64(cdr_id),
    legs             UInt16,
    account          String,
    caller_number    String,
    caller_ip        String,
    dialled_number   String,
    disposition      String,
    sip_code         UInt16,
    ringing_ms       UInt64,
    duration_ms      UInt64,
    pdd_ms           UInt64,
    gateways         Array(String),
    leg_setup_ms     Array(UInt64),
    leg_gateway      Array(String),
    leg_disposition  Array(String),
    leg_sip_code     Array(UInt16),
    leg_ringing_ms   Array(UInt64),
    leg_duration_ms  Array(UInt64),
    leg_pdd_ms       Array(UInt32),
    version          UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(setup)
ORDER BY (setup_ms, cdr_key);

INSERT INTO cdr_call (setup, setup_ms, cdr_id, legs, account, caller_number, caller_ip, dialled_number,
                      disposition, sip_code, ringing_ms, duration_ms, pdd_ms, gateways, leg_setup_ms,
                      leg_gateway, leg_disposition, leg_sip_code, leg_ringing_ms, leg_duration_ms,
                      leg_pdd_ms, version)
SELECT toDateTime(intDiv(c_setup_ms, 1000)), c_setup_ms, cdr_id, c_legs, c_account, c_caller_number,
       c_caller_ip, c_dialled_number, c_disposition, c_sip_code, c_ringing_ms, c_duration_ms,
       if(c_ringing_ms > 0, toUInt64(greatest(toInt64(c_ringing_ms) - toInt64(c_setup_ms), 0)),
          if(c_pdd_ms > 0, toUInt64(greatest(toInt64(c_pdd_end_ms) - toInt64(c_setup_ms), 0)), toUInt64(0))),
       c_gateways, c_leg_setup_ms, c_leg_gateway, c_leg_disposition, c_leg_sip_code, c_leg_ringing_ms,
       c_leg_duration_ms, c_leg_pdd_ms, c_version
FROM (
    SELECT cdr_id,
           count() AS c_legs,
           argMin(setup_ms, leg) AS c_setup_ms,
           argMin(account, leg) AS c_account,
           argMin(caller_number, leg) AS c_caller_number,
           argMin(caller_ip, leg) AS c_caller_ip,
           argMin(dialled_number, leg) AS c_dialled_number,
           argMin(call_disposition, leg) AS c_disposition,
           argMin(call_sip_code, leg) AS c_sip_code,
           minIf(ringing_ms, ringing_ms > 0) AS c_ringing_ms,
           argMax(duration_ms, if(disposition = 'answered', 1000000, 0) + leg) AS c_duration_ms,
           argMax(pdd_ms, if(disposition = 'answered', 1000000, 0) + leg) AS c_pdd_ms,
           argMax(setup_ms + pdd_ms, if(disposition = 'answered', 1000000, 0) + leg) AS c_pdd_end_ms,
           arraySort(groupUniqArray(gateway)) AS c_gateways,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, setup_ms)))) AS c_leg_setup_ms,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, gateway)))) AS c_leg_gateway,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, disposition)))) AS c_leg_disposition,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, sip_code)))) AS c_leg_sip_code,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, ringing_ms)))) AS c_leg_ringing_ms,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, duration_ms)))) AS c_leg_duration_ms,
           arrayMap(x -> tupleElement(x, 2), arraySort(groupArray((leg, pdd_ms)))) AS c_leg_pdd_ms,
           max(version) AS c_version
    FROM cdr FINAL
    GROUP BY cdr_id
    HAVING min(leg) = 0
);

-- migration 7: cdr_call by day, and per-day statistics of closed days (issue 19)
-- On a ClickHouse 18.16 server, statistics over a month of cdr_call took 2-3 s
-- at 10M legs: its FINAL merges every part of the range in one stream, and
-- exact PDD quantiles sort every call's value.  Two changes:
--   * cdr_call is partitioned by day (the same columns, rows copied): a day
--     whose calls are over (closed) is merged to one part by the API process
--     (OPTIMIZE ... PARTITION ... FINAL) and then changes only when a late
--     CDR arrives;
--   * cdr_day holds each closed day's statistics (cdr/store/rollup.py): one row
--     per dialled-number prefix (2 characters), counted from `cdr_call FINAL`
--     (deduplicated: a re-inserted call counts once), with the histogram of
--     its PDDs (pdd_values ascending, pdd_counts) for exact quantiles.  A
--     count (a "run") is used only while the day's data is exactly what it
--     counted: cdr_day_run records the
--     day's cdr_call part names at that time, and a query uses a run only if
--     they are still the day's active parts (names are never reused: any
--     insert, merge or mutation changes them).  Other days, and the parts of
--     days a range cuts, are read from cdr_call as before.
--   cdr_day_run is written after the run's rows: a run without it is not used.
CREATE TABLE IF NOT EXISTS cdr_call_by_day (
    setup            DateTime('UTC'),
    setup_ms         UInt64,
    cdr_id           String,
    cdr_key          UInt64 DEFAULT cityHash64(cdr_id),
    legs             UInt16,
    account          String,
    caller_number    String,
    caller_ip        String,
    dialled_number   String,
    disposition      String,
    sip_code         UInt16,
    ringing_ms       UInt64,
    duration_ms      UInt64,
    pdd_ms           UInt64,
    gateways         Array(String),
    leg_setup_ms     Array(UInt64),
    leg_gateway      Array(String),
    leg_disposition  Array(String),
    leg_sip_code     Array(UInt16),
    leg_ringing_ms   Array(UInt64),
    leg_duration_ms  Array(UInt64),
    leg_pdd_ms       Array(UInt32),
    version          UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(setup)
ORDER BY (setup_ms, cdr_key);

INSERT INTO cdr_call_by_day (setup, setup_ms, cdr_id, cdr_key, legs, account, caller_number, caller_ip,
                             dialled_number, disposition, sip_code, ringing_ms, duration_ms, pdd_ms, gateways,
                             leg_setup_ms, leg_gateway, leg_disposition, leg_sip_code, leg_ringing_ms,
                             leg_duration_ms, leg_pdd_ms, version)
SELECT setup, setup_ms, cdr_id, cdr_key, legs, account, caller_number, caller_ip, dialled_number, disposition,
       sip_code, ringing_ms, duration_ms, pdd_ms, gateways, leg_setup_ms, leg_gateway, leg_disposition,
       leg_sip_code, leg_ringing_ms, leg_duration_ms, leg_pdd_ms, version
FROM cdr_call FINAL;

RENAME TABLE cdr_call TO cdr_call_by_month, cdr_call_by_day TO cdr_call;

DROP TABLE cdr_call_by_month;

CREATE TABLE IF NOT EXISTS cdr_day (
    day            Date,
    run            UInt64,
    prefix         String,
    calls          UInt64,
    attempts       UInt64,
    answered       UInt64,
    effective      UInt64,
    seer_effective UInt64,
    answered_ms    UInt64,
    pdd_n          UInt64,
    pdd_sum        UInt64,
    pdd_values     Array(UInt64),
    pdd_counts     Array(UInt64)
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (day, run, prefix);

CREATE TABLE IF NOT EXISTS cdr_day_run (
    day         Date,
    run         UInt64,
    parts       String,
    computed_ms UInt64
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (day, run);
