"""Durable enqueue rate of the agent's Store against persist-queue's SQLite queue.

    python bench/enqueue.py [--rows 2000] [--rounds 5] [--payload 2048] [--dir PATH]

One row per transaction, WAL + synchronous=FULL for everyone, the same ~2 KB payload, the same
directory (so the same disk). Measured: `Store.enqueue` (one outbox row; the poller stores a
whole poll's rows in one `commit_poll` transaction), `Store.add_claim` (a claim, the scanner's
path), `persistqueue.SQLiteQueue.put` with auto_commit=True, and a bare sqlite3 INSERT+COMMIT
with one UNIQUE key as the ceiling. Rounds alternate between the contenders so drift on the
machine hits all of them alike; the median round counts. Where the fsync is cheap (this VM) the
index work decides: an outbox row updates three indexes, a persist-queue row none.
Target (SPEC §11): our durable enqueue at least as fast as persist-queue at the same durability.
persist-queue is a bench-only dependency (the `bench` extra): `./dev bench enqueue` installs it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.queue.store import NewClaim, Store

try:
    import persistqueue
except ImportError:
    persistqueue = None

Writer = Callable[[int, bytes], None]
Maker = Callable[[Path], tuple[Writer, Callable[[], None]]]


def payload(size: int) -> bytes:
    """JSON-like text of `size` bytes, different in every row so nothing compresses or repeats."""
    return (b'{"lines":"' + os.urandom(size).hex().encode())[: size - 2] + b'"}'


def ours_outbox(folder: Path) -> tuple[Writer, Callable[[], None]]:
    store = Store.open(folder)

    def write(n: int, body: bytes) -> None:
        key = str(uuid.uuid4())
        store.enqueue(f"r-{key}", key, body, f"c-{n}")

    return write, store.close


def ours_claims(folder: Path) -> tuple[Writer, Callable[[], None]]:
    """A claim is small; it carries no body. Each at its own till, so none supersedes another."""
    store = Store.open(folder)

    def write(n: int, body: bytes) -> None:
        store.add_claim(
            NewClaim(
                correlation_id=f"c-{n}",
                customer_kind="boniq_code",
                customer=f"BQ1-{n:036d}",
                workplace=n,
                source="bench",
                scanned_at=time.time(),
                pos_marker=None,
            ),
            dedupe_window=5.0,
        )

    return write, store.close


def persist_queue(folder: Path) -> tuple[Writer, Callable[[], None]]:
    queue = persistqueue.SQLiteQueue(str(folder), auto_commit=True)
    for conn in {id(c): c for c in (queue._putter, queue._getter)}.values():
        conn.execute("PRAGMA synchronous = FULL")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if (mode, sync) != ("wal", 2):
            raise SystemExit(
                f"persist-queue runs journal_mode={mode} synchronous={sync}, not WAL+FULL"
            )

    def write(n: int, body: bytes) -> None:
        queue.put(body)

    return write, queue.close


def bare_sqlite(folder: Path) -> tuple[Writer, Callable[[], None]]:
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "bare.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB)"
    )

    def write(n: int, body: bytes) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO q (key, body) VALUES (?, ?)", (str(uuid.uuid4()), body))
        conn.execute("COMMIT")

    return write, conn.close


CONTENDERS: dict[str, Maker] = {
    "Store.enqueue (outbox row)": ours_outbox,
    "Store.add_claim (claim)": ours_claims,
    "persist-queue SQLiteQueue.put": persist_queue,
    "bare sqlite3 INSERT+COMMIT": bare_sqlite,
}


def rate(make: Maker, folder: Path, rows: int, size: int) -> float:
    bodies = [payload(size) for _ in range(rows)]
    write, close = make(folder)
    try:
        write(-1, bodies[0])  # schema and first pages allocated outside the timing
        started = time.perf_counter()
        for n, body in enumerate(bodies):
            write(n, body)
        return rows / (time.perf_counter() - started)
    finally:
        close()


def filesystem(path: Path) -> str:
    """The type of the file system holding `path`: the longest mount point above it."""
    mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    above = [(point, kind) for point, kind in mounts if path.resolve().is_relative_to(point)]
    return max(above, key=lambda m: len(m[0]))[1] if above else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per round and contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payload", type=int, default=2048, help="bytes per row")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    contenders = dict(CONTENDERS)
    if persistqueue is None:
        print(
            "persist-queue is not installed, so the comparison cannot run: "
            "`./dev bench enqueue` installs it (the `bench` extra)"
        )
        del contenders["persist-queue SQLiteQueue.put"]
    if os.environ.get("LD_PRELOAD"):
        print(f"warning: LD_PRELOAD={os.environ['LD_PRELOAD']} (eatmydata would void durability)")
    with tempfile.TemporaryDirectory(prefix="boniq-enqueue-", dir=args.dir) as tmp:
        print(
            f"{args.rows} rows x {args.rounds} rounds, {args.payload}-byte payload,"
            f" one row per transaction, WAL+FULL, on {filesystem(Path(tmp))} ({tmp})"
        )
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for round_ in range(args.rounds):
            for index, (name, make) in enumerate(contenders.items()):
                folder = Path(tmp) / f"{index}-{round_}"
                rates[name].append(rate(make, folder, args.rows, args.payload))
        medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        print(f"  {name:32s} {value:8.0f} rows/s  (rounds {spread})")
    ours = medians["Store.enqueue (outbox row)"]
    bare = medians["bare sqlite3 INSERT+COMMIT"]
    print(f"  ratio Store.enqueue / bare sqlite3       {ours / bare:6.2f}")
    pq = medians.get("persist-queue SQLiteQueue.put")
    if pq is None:
        print("  target Store ≥ persist-queue:  not measured (persist-queue missing)")
        return
    claims = medians["Store.add_claim (claim)"]
    print(f"  ratio Store.enqueue / persist-queue      {ours / pq:6.2f}")
    print(f"  ratio Store.add_claim / persist-queue    {claims / pq:6.2f}")
    print(f"  target Store.enqueue ≥ persist-queue:    {'PASS' if ours >= pq else 'MISS'}")
    print(f"  target Store.add_claim ≥ persist-queue:  {'PASS' if claims >= pq else 'MISS'}")


if __name__ == "__main__":
    main()
