"""The outbox: in-memory append, one-transaction flush, pending/ack, reopen after a crash."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.events.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]


def rows(outbox: Outbox, limit: int = 10_000) -> list[tuple[bytes, bytes]]:
    return [(key, value) for _, key, value in outbox.pending(limit)]


def test_append_only_buffers_until_flush(tmp_path):
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append(b"call-1", b"e1")
        outbox.append(b"call-1", b"e2")
        assert outbox.pending(10) == []
        assert outbox.count() == 2 and outbox.buffered == 2
        assert outbox.flush() == 2
        assert outbox.buffered == 0 and outbox.count() == 2
        assert rows(outbox) == [(b"call-1", b"e1"), (b"call-1", b"e2")]
        assert outbox.flush() == 0


def test_pending_is_oldest_first_and_limited(tmp_path):
    with Outbox(tmp_path / "o.db") as outbox:
        for i in range(5):
            outbox.append(b"k%d" % i, b"v%d" % i)
            outbox.flush()
        pending = outbox.pending(3)
        assert [value for _, _, value in pending] == [b"v0", b"v1", b"v2"]
        assert [seq for seq, _, _ in pending] == sorted(seq for seq, _, _ in pending)


def test_ack_by_seqs_and_upto(tmp_path):
    with Outbox(tmp_path / "o.db") as outbox:
        for i in range(6):
            outbox.append(b"k", b"v%d" % i)
        outbox.flush()
        seqs = [seq for seq, _, _ in outbox.pending(10)]
        assert outbox.ack([seqs[1], seqs[3]]) == 2
        assert [v for _, v in rows(outbox)] == [b"v0", b"v2", b"v4", b"v5"]
        assert outbox.ack(upto=seqs[4]) == 3
        assert [v for _, v in rows(outbox)] == [b"v5"]
        assert outbox.count() == 1
        assert outbox.ack([seqs[0]]) == 0  # already gone: nothing happens


def test_seqs_keep_growing_after_the_outbox_empties(tmp_path):
    """ack(upto=n) must never reach rows written after the reader looked."""
    with Outbox(tmp_path / "o.db") as outbox:
        outbox.append(b"k", b"first")
        outbox.flush()
        [(first_seq, _, _)] = outbox.pending(1)
        outbox.ack(upto=first_seq)
        outbox.append(b"k", b"second")
        outbox.flush()
        [(second_seq, _, _)] = outbox.pending(1)
        assert second_seq > first_seq


def test_reopen_after_a_crash_yields_flushed_unacked_rows(tmp_path):
    path = tmp_path / "o.db"
    # A real crash: the process dies without closing the database.
    script = textwrap.dedent(f"""
        import os
        from proxy.events.outbox import Outbox
        outbox = Outbox({str(path)!r})
        for i in range(10):
            outbox.append(b"call-%d" % (i % 3), b"event-%d" % i)
        outbox.flush()
        seqs = [seq for seq, _, _ in outbox.pending(3)]
        outbox.ack(upto=seqs[-1])
        outbox.append(b"call-x", b"never-flushed")
        os._exit(9)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30)
    assert result.returncode == 9
    with Outbox(path) as reopened:
        assert [v for _, v in rows(reopened)] == [b"event-%d" % i for i in range(3, 10)]
        assert reopened.count() == 7


def test_close_flushes_the_buffer(tmp_path):
    outbox = Outbox(tmp_path / "o.db")
    outbox.append(b"k", b"v")
    outbox.close()
    with Outbox(tmp_path / "o.db") as reopened:
        assert rows(reopened) == [(b"k", b"v")]


operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("flush"), st.just(0)),
    st.tuples(st.just("ack_upto"), st.integers(0, 6)),   # how many of the oldest
    st.tuples(st.just("ack_one"), st.integers(0, 6)),    # which one of the pending
    st.tuples(st.just("reopen"), st.just(0)),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_behaves_like_a_queue_model(tmp_path_factory, ops):
    """Whatever the interleaving, pending rows are exactly the flushed, unacked
    appends in order; a reopen (after close) keeps them."""
    path = tmp_path_factory.mktemp("model") / "o.db"
    outbox = Outbox(path)
    stored: list[bytes] = []   # model: flushed, unacked, in order
    buffered: list[bytes] = []
    n = 0
    try:
        for op, arg in ops:
            if op == "append":
                for _ in range(arg):
                    value = b"e%d" % n
                    n += 1
                    outbox.append(b"k", value)
                    buffered.append(value)
            elif op == "flush":
                outbox.flush()
                stored += buffered
                buffered = []
            elif op == "ack_upto" and arg and stored:
                pending = outbox.pending(arg)
                outbox.ack(upto=pending[-1][0])
                del stored[:len(pending)]
            elif op == "ack_one" and arg < len(stored):
                seq = outbox.pending(arg + 1)[arg][0]
                outbox.ack([seq])
                del stored[arg]
            elif op == "reopen":
                outbox.close()  # flushes
                stored += buffered
                buffered = []
                outbox = Outbox(path)
            assert [v for _, v in rows(outbox)] == stored
            assert outbox.count() == len(stored) + len(buffered)
    finally:
        outbox.close()


def test_kept_rows_wait_for_the_archive_and_go_again_to_a_new_broker(tmp_path):
    """Retention (docs/operations.md): delivered rows stay until the archiver's
    committed offset passes them in the same broker epoch; a new epoch makes
    them pending again; reopening keeps the counts."""
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        for i in range(6):
            outbox.append(b"k", b"v%d" % i)
        outbox.flush()
        seqs = [seq for seq, _, _ in outbox.pending(10)]
        # rows 0-3 delivered to epoch A: partition 0 offsets 10-11, partition 1 offsets 5-6
        assert outbox.keep([(seqs[0], 0, 10), (seqs[1], 0, 11), (seqs[2], 1, 5), (seqs[3], 1, 6)], "A") == 4
        assert (outbox.kept, outbox.count()) == (4, 2)
        assert [v for _, v in rows(outbox)] == [b"v4", b"v5"]
        assert outbox.ack(upto=seqs[3]) == 0                  # acks never touch kept rows
        assert outbox.trim("B", {0: 100, 1: 100}) == 0        # another broker's position: nothing
        assert outbox.trim("A", {0: 11, 1: 5}) == 1           # archived: offset 10 of partition 0
        assert outbox.kept == 3
    with Outbox(path) as outbox:
        assert (outbox.kept, outbox.count()) == (3, 2)
        assert outbox.resend_other_epochs("B") == 3           # the broker restarted
        assert [v for _, v in rows(outbox)] == [b"v1", b"v2", b"v3", b"v4", b"v5"]
        pending = [seq for seq, _, _ in outbox.pending(10)]
        outbox.keep([(seq, 0, i) for i, seq in enumerate(pending)], "B")
        assert outbox.drop_kept_beyond(2) == 3 and outbox.kept == 2
        assert [v for _, v in outbox._db.execute("SELECT seq, value FROM outbox ORDER BY seq")] == [b"v4", b"v5"]
