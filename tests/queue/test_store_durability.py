"""The durable buffer: survives SIGKILL mid-write, moves the cursor atomically, reports damage."""

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from agent.errors import StoreCorrupt, StoreError, StoreLocked
from agent.queue.claims import ClaimState, Close, Reason
from agent.queue.store import DB_NAME, NewClaim, NewDelivery, PollCommit, Sighting, Store

WRITER = textwrap.dedent("""
    import sys, time
    from agent.queue.store import NewClaim, NewDelivery, PollCommit, Store
    store = Store.open(sys.argv[1])
    n = 0
    while True:
        n += 1
        claim = store.add_claim(NewClaim(correlation_id=f"c-{n}", customer_kind="email",
                                customer=f"u{n}@shop.nl", workplace=n % 4, source="test",
                                scanned_at=time.time(), pos_marker=n), dedupe_window=5.0)
        store.commit_poll(PollCommit(marker=n, deliveries=[NewDelivery(
            f"r-{n}", f"{n:064x}", b"x" * 2000, f"c-{n}", "sale", "email", f"u{n}@shop.nl",
            claim.claim.id)]))
        print(n, flush=True)
""")


def delivery(n: int, claim_id=None) -> NewDelivery:
    return NewDelivery(f"r-{n}", f"{n:064x}", b"{}", f"c-{n}", "sale", "email", "a@b.nl", claim_id)


def test_sigkill_in_a_write_loop_loses_no_acknowledged_row(tmp_path):
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        acked = [int(child.stdout.readline()) for _ in range(200 + 150 * round_)]
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with Store.open(tmp_path) as store:
            assert store.quick_check() == "ok"
            rows = {item.receipt_id for item in store.outbox(limit=100_000)}
            assert {f"r-{n}" for n in acked} <= rows
            assert store.get_cursor() >= acked[-1]


def test_database_is_private_to_the_agent(tmp_path):
    Store.open(tmp_path / "data").close()
    assert stat.S_IMODE(os.stat(tmp_path / "data" / DB_NAME).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700


def test_wal_with_full_sync_is_in_force(tmp_path):
    with Store.open(tmp_path) as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_cursor_moves_only_with_the_rows_it_produced(tmp_path):
    with Store.open(tmp_path) as store:
        store.commit_poll(PollCommit(marker=10, deliveries=[delivery(1)]))
        bad = NewDelivery("r-2", None, b"{}", "c-2", "sale", "email", "a@b.nl")  # NOT NULL key
        with pytest.raises(StoreError, match="NOT NULL"):
            store.commit_poll(PollCommit(marker=20, deliveries=[delivery(3), bad]))
        assert store.get_cursor() == 10
        assert [i.receipt_id for i in store.outbox()] == ["r-1"]


def test_a_receipt_seen_again_is_stored_once(tmp_path):
    with Store.open(tmp_path) as store:
        assert len(store.commit_poll(PollCommit(marker=1, deliveries=[delivery(1)])).stored) == 1
        assert store.commit_poll(PollCommit(marker=2, deliveries=[delivery(1)])).stored == []
        assert len(store.outbox()) == 1 and store.get_cursor() == 2


def test_cursor_never_moves_backwards(tmp_path):
    with Store.open(tmp_path) as store:
        store.commit_poll(PollCommit(marker=50))
        store.commit_poll(PollCommit(marker=40))
        assert store.get_cursor() == 50


def test_matched_claim_is_closed_in_the_same_transaction(tmp_path):
    with Store.open(tmp_path) as store:
        claim = store.add_claim(
            NewClaim(
                correlation_id="c",
                customer_kind="email",
                customer="a@b.nl",
                workplace=2,
                source="t",
                scanned_at=time.time(),
                pos_marker=0,
            ),
            dedupe_window=5.0,
        )
        store.commit_poll(PollCommit(marker=5, deliveries=[delivery(7, claim.claim.id)]))
        assert store.pending_claims() == []
        assert store.claims("delivered")[0].receipt_id == "r-7"


def claim_at(store, customer, at, cid="c"):
    return store.add_claim(
        NewClaim(
            correlation_id=cid,
            customer_kind="email",
            customer=customer,
            workplace=2,
            source="t",
            scanned_at=at,
            pos_marker=0,
        ),
        dedupe_window=5.0,
        rescan_guard=10.0,
    )


def test_same_code_twice_is_one_claim_and_a_second_code_waits_beside_the_first(tmp_path):
    with Store.open(tmp_path) as store:
        t = time.time()
        first = claim_at(store, "a@b.nl", t, "c1")
        again = claim_at(store, "a@b.nl", t + 1, "c2")
        other = claim_at(store, "z@b.nl", t + 2, "c3")
        assert again.duplicate and again.claim.id == first.claim.id
        assert not other.duplicate
        assert [c.customer for c in store.pending_claims()] == ["a@b.nl", "z@b.nl"]


def test_the_same_phone_read_again_just_after_its_sale_matched_is_the_same_claim(tmp_path):
    with Store.open(tmp_path) as store:
        first = claim_at(store, "a@b.nl", 1000.0)
        store.commit_poll(
            PollCommit(marker=5, deliveries=[delivery(7, first.claim.id)], now=1008.0)
        )
        again = claim_at(store, "a@b.nl", 1010.0)  # 10 s after the scan, 2 s after the match
        assert again.duplicate and again.claim.state == "delivered"
        assert store.pending_claims() == []


def test_a_claim_closed_unsure_keeps_its_reason_and_is_counted(tmp_path):
    with Store.open(tmp_path) as store:
        claim = claim_at(store, "a@b.nl", 1000.0).claim
        result = store.commit_poll(
            PollCommit(marker=3, closes=[Close(claim, ClaimState.UNSURE, Reason.TWO_CODES)])
        )
        assert [c.claim.id for c in result.closed] == [claim.id]
        (closed,) = store.claims("unsure")
        assert closed.reason == "two-codes"
        assert store.summary()["claims_unsure_reasons"] == {"two-codes": 1}
        again = store.commit_poll(PollCommit(marker=4, closes=[Close(claim, ClaimState.EXPIRED)]))
        assert again.closed == [], "a closed claim was closed a second time"


def test_a_store_of_the_first_schema_is_migrated_keeping_every_claim(tmp_path):
    import sqlite3

    from agent.queue.database import MIGRATIONS

    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    conn.executescript(
        "INSERT INTO claims (correlation_id, customer_kind, customer, workplace, source,"
        " scanned_at, state) VALUES ('c1', 'email', 'a@b.nl', 2, 't', 1, 'matched'),"
        " ('c2', 'email', 'b@b.nl', 2, 't', 2, 'replaced'), ('c3', 'email', 'c@b.nl', 2, 't', 3,"
        " 'pending');"
        "INSERT INTO outbox (receipt_id, idempotency_key, body, correlation_id, claim_id,"
        " next_attempt_at, created_at) VALUES ('r-1', 'k', x'7b7d', 'c1', 1, 0, 0);"
    )
    conn.close()
    with Store.open(tmp_path) as store:
        states = {c.customer: (c.state, c.reason) for c in store.claims()}
        assert states == {
            "a@b.nl": ("delivered", None),
            "b@b.nl": ("unsure", "superseded"),
            "c@b.nl": ("pending", None),
        }
        assert store.outbox()[0].claim_id == 1
        assert store.quick_check() == "ok"


def test_expired_claims_stay_visible(tmp_path):
    with Store.open(tmp_path) as store:
        store.add_claim(
            NewClaim(
                correlation_id="c",
                customer_kind="email",
                customer="a@b.nl",
                workplace=2,
                source="t",
                scanned_at=1000.0,
                pos_marker=0,
            ),
            dedupe_window=5.0,
        )
        assert len(store.expire_claims(scanned_before=2000.0, reserved_before=0.0, now=2000.0)) == 1
        assert store.summary()["claims_expired"] == 1
        assert store.claims("expired")[0].customer == "a@b.nl"


def test_retry_schedule_survives_reopening(tmp_path):
    with Store.open(tmp_path) as store:
        item = store.enqueue("r-1", "a" * 64, b"{}", "c-1", now=1000.0)
        store.schedule_retry(item.id, next_attempt_at=5000.0, error="503")
    with Store.open(tmp_path) as store:
        assert store.due(now=4999.0) == []
        (due,) = store.due(now=5000.0)
        assert (due.attempts, due.last_error) == (1, "503")


def test_dead_letters_can_be_requeued(tmp_path):
    with Store.open(tmp_path) as store:
        item = store.enqueue("r-1", "a" * 64, b"{}", "c-1", now=1000.0)
        store.mark_dead(item.id, reason="422 schema")
        assert store.due(now=10**10) == []
        assert store.requeue_dead(now=2000.0) == 1
        assert [i.id for i in store.due(now=2000.0)] == [item.id]


def test_corrupt_file_is_reported_not_replaced(tmp_path):
    path = tmp_path / DB_NAME
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreCorrupt, match="doctor"):
        Store.open(tmp_path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_a_held_write_lock_gives_store_locked(tmp_path):
    Store.open(tmp_path).close()
    other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with Store.open(tmp_path) as store, pytest.raises(StoreLocked):
            store.enqueue("r-1", "a" * 64, b"{}", "c-1")
    finally:
        other.execute("ROLLBACK")
    with Store.open(tmp_path) as store:
        assert store.enqueue("r-1", "a" * 64, b"{}", "c-1").state == "pending"


def test_retention_purges_only_old_delivered_rows(tmp_path):
    with Store.open(tmp_path) as store:
        old = store.enqueue("r-old", "a" * 64, b"{}", "c", now=100.0)
        new = store.enqueue("r-new", "b" * 64, b"{}", "c", now=100.0)
        pending = store.enqueue("r-pend", "c" * 64, b"{}", "c", now=100.0)
        store.mark_delivered(old.id, cloud_id="x", now=1000.0)
        store.mark_delivered(new.id, cloud_id="y", now=9000.0)
        assert store.purge_delivered(delivered_before=5000.0) == 1
        assert {i.receipt_id for i in store.outbox()} == {"r-new", "r-pend"}
        assert pending.state == "pending"


def test_a_receipt_seen_once_stays_known_even_without_an_outbox_row(tmp_path):
    with Store.open(tmp_path) as store:
        store.commit_poll(
            PollCommit(marker=3, sightings=[Sighting("unclaimed-sale", 2, 1000.0, 3, "sale")])
        )
        assert list(store.seen_before(["unclaimed-sale", "new-sale"])) == ["unclaimed-sale"]
        assert store.seen_before(["unclaimed-sale"])["unclaimed-sale"].first_marker == 3


def test_retention_purge_works_with_claims_that_point_at_delivered_rows(tmp_path):
    with Store.open(tmp_path) as store:
        claim = store.add_claim(
            NewClaim(
                correlation_id="c",
                customer_kind="email",
                customer="a@b.nl",
                workplace=2,
                source="t",
                scanned_at=100.0,
                pos_marker=0,
            ),
            dedupe_window=5.0,
        )
        (item,) = store.commit_poll(
            PollCommit(
                marker=1,
                deliveries=[delivery(1, claim.claim.id)],
                now=100.0,
                sightings=[Sighting("r-1", 2, 100.0, 1, "sale")],
            )
        ).stored
        store.mark_delivered(item.id, cloud_id="x", now=200.0)
        assert store.purge_delivered(delivered_before=10_000.0) == 1
        assert store.claims() == [] and store.outbox() == []
        assert store.seen_before(["r-1"]) == {}
