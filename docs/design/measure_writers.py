"""Measure concurrent writers of additive counts on S3 (moto's server): the numbers in storage.md.

Four ways W processes add U units of counts each into one array of [language, role, layer,
neuron] int64 counts on object storage, checked against the serial sum bit for bit:

- ``unlocked``: today's store on s3:// from several processes (its lock holds within one process
  only): read, add, write, with nothing between processes;
- ``lock-object``: langneurons' own store on s3:// (journal, manifests, consolidated metadata)
  with its write lock made of lock objects created by a conditional PUT (store/_objectlock.py);
- ``icechunk``: one icechunk repository; each unit is a transaction (read, add, write, commit),
  retried from a fresh session when the commit conflicts;
- ``shards``: each writer writes its own shard group (no shared object is ever rewritten), and the
  reader adds the shards up.

Run: ``.venv/bin/python docs/design/measure_writers.py`` (needs icechunk, s3fs, moto[server]).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid

import numpy as np

K, R, L, N = 4, 2, 8, 1024  # languages, roles, layers, neurons: 512 KiB of int64 counts
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def unit_counts(writer: int, unit: int) -> tuple[int, np.ndarray]:
    """The language a unit adds to and its counts (deterministic: the serial sum is known)."""
    rng = np.random.default_rng(1000 * writer + unit)
    return int(rng.integers(K)), rng.integers(0, 50, size=(R, L, N), dtype=np.int64)


def serial_sum(writers: int, units: int) -> np.ndarray:
    total = np.zeros((K, R, L, N), np.int64)
    for w in range(writers):
        for u in range(units):
            lang, add = unit_counts(w, u)
            total[lang] += add
    return total


# ---------------------------------------------------------------------- unlocked zarr on s3
def _zarr_group(url: str):
    import zarr

    return zarr.open_group(url, mode="a", zarr_format=3)


def unlocked_setup(url: str) -> None:
    group = _zarr_group(url)
    group.create_array("n_active", shape=(K, R, L, N), chunks=(1, R, L, N), dtype="int64",
                       fill_value=0, overwrite=True)  # fmt: skip


def unlocked_writer(url: str, writer: int, units: int, out: mp.Queue) -> None:
    arr = _zarr_group(url)["n_active"]
    for u in range(units):
        lang, add = unit_counts(writer, u)
        arr[lang] = arr[lang] + add  # read, add, write: nothing between processes
    out.put((writer, 0))


def unlocked_read(url: str) -> np.ndarray:
    return np.asarray(_zarr_group(url)["n_active"][...])


# ---------------------------------------------------------------------- langneurons + lock object
LANGS = [f"l{i}" for i in range(K)]


def locked_setup(url: str) -> None:
    from langneurons.store import create_store

    create_store(url).create_run("m/base", n_layers=L, n_neurons=N, languages=LANGS)


def locked_writer(url: str, writer: int, units: int, out: mp.Queue) -> None:
    from langneurons.store import Counts, open_store

    run = open_store(url, mode="r+").writer("m/base")
    for u in range(units):
        lang, add = unit_counts(writer, u)
        tokens = np.full((1, R), 50, np.int64)
        run.merge_counts(Counts([LANGS[lang]], add[None], tokens), unit=f"w{writer}-u{u}")
    out.put((writer, 0))


def locked_read(url: str) -> np.ndarray:
    from langneurons.store import open_store

    return np.asarray(open_store(url).open_run("m/base")["n_active"].values)


def lock_overhead(bucket: str, units: int) -> tuple[float, float, float]:
    """One process writing ``units`` units with the lock object and without: seconds per write,
    and seconds to take and release the lock alone."""
    from langneurons.store import _remote

    times = []
    for locked in (True, False):
        url = f"s3://{bucket}/overhead-{locked}-{uuid.uuid4().hex[:6]}.zarr"
        locked_setup(url)
        real = _remote.object_lock
        if not locked:
            _remote.object_lock = lambda zstore, url: None  # type: ignore[assignment]
        try:
            start = time.perf_counter()
            locked_writer(url, 0, units, mp.Queue())
            times.append((time.perf_counter() - start) / units)
        finally:
            _remote.object_lock = real
    from langneurons.store import open_store

    store = open_store(url, mode="r+")
    start = time.perf_counter()
    for _ in range(units):
        with _remote.object_lock(store.zarr_store, store.url.replace("-False-", "-True-")):
            pass
    return times[0], times[1], (time.perf_counter() - start) / units


# ---------------------------------------------------------------------- icechunk
def _repo(bucket: str, prefix: str, endpoint: str, create: bool = False):
    import icechunk

    storage = icechunk.s3_storage(
        bucket=bucket, prefix=prefix, endpoint_url=endpoint, allow_http=True, region="us-east-1",
        access_key_id="testing", secret_access_key="testing", force_path_style=True,
    )  # fmt: skip
    if create:
        return icechunk.Repository.create(storage)
    return icechunk.Repository.open(storage)


def icechunk_setup(bucket: str, prefix: str, endpoint: str) -> None:
    import zarr

    repo = _repo(bucket, prefix, endpoint, create=True)
    session = repo.writable_session("main")
    group = zarr.open_group(session.store, mode="a", zarr_format=3)
    group.create_array("n_active", shape=(K, R, L, N), chunks=(1, R, L, N), dtype="int64",
                       fill_value=0)  # fmt: skip
    session.commit("create")


def icechunk_writer(bucket: str, prefix: str, endpoint: str, writer: int, units: int,
                    out: mp.Queue) -> None:  # fmt: skip
    import icechunk
    import zarr

    repo = _repo(bucket, prefix, endpoint)
    retries = 0
    for u in range(units):
        lang, add = unit_counts(writer, u)
        while True:
            session = repo.writable_session("main")
            arr = zarr.open_group(session.store, mode="r+")["n_active"]
            arr[lang] = arr[lang] + add
            try:
                session.commit(f"writer {writer} unit {u}")
                break
            except icechunk.ConflictError:
                retries += 1  # another writer committed first: redo on the new state
    out.put((writer, retries))


def icechunk_read(bucket: str, prefix: str, endpoint: str) -> np.ndarray:
    import zarr

    session = _repo(bucket, prefix, endpoint).readonly_session(branch="main")
    return np.asarray(zarr.open_group(session.store, mode="r")["n_active"][...])


# ---------------------------------------------------------------------- per-writer shards
def shards_writer(url: str, writer: int, units: int, out: mp.Queue) -> None:
    import zarr

    group = zarr.open_group(f"{url}/_shards/w{writer}-{uuid.uuid4().hex[:8]}", mode="w")
    arr = group.create_array("n_active", shape=(K, R, L, N), chunks=(1, R, L, N),
                             dtype="int64", fill_value=0)  # fmt: skip
    local = np.zeros((K, R, L, N), np.int64)
    for u in range(units):  # a writer adds its units up in its own shard, written per unit
        lang, add = unit_counts(writer, u)
        local[lang] += add
        arr[lang] = local[lang]
    out.put((writer, 0))


def shards_read(url: str) -> tuple[np.ndarray, float]:
    import zarr

    start = time.perf_counter()
    root = zarr.open_group(f"{url}/_shards", mode="r")
    total = np.zeros((K, R, L, N), np.int64)
    for _, group in root.groups():
        total += np.asarray(group["n_active"][...])
    return total, time.perf_counter() - start


# ---------------------------------------------------------------------- driver
def run_processes(target, args_of, writers: int, units: int) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(w), units, out)) for w in range(writers)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    return time.perf_counter() - start, sum(r for _, r in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--overhead-only", action="store_true")
    args = parser.parse_args()
    os.environ.update(CREDS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    rows = []
    try:
        time.sleep(3)
        import s3fs

        s3fs.S3FileSystem().mkdir("bench")
        with_lock, without, lock_alone = lock_overhead("bench", args.units)
        line = f"one writer, s per write: with lock object {with_lock:.2f}, without {without:.2f}"
        print(f"{line}; take and release the lock alone {lock_alone:.3f}", flush=True)
        rows.append(("per-write-with-lock", 1, with_lock, 0, True, 0))
        rows.append(("per-write-without-lock", 1, without, 0, True, 0))
        rows.append(("lock-take-release", 1, lock_alone, 0, True, 0))
        for writers in [] if args.overhead_only else [int(w) for w in args.writers.split(",")]:
            expected = serial_sum(writers, args.units)
            tag = uuid.uuid4().hex[:6]
            url = f"s3://bench/unlocked-{tag}.zarr"
            unlocked_setup(url)
            wall, _ = run_processes(
                unlocked_writer, lambda w, url=url: (url, w), writers, args.units
            )
            got = unlocked_read(url)
            rows.append(("unlocked", writers, wall, 0, bool(np.array_equal(got, expected)),
                         int((expected - got).sum())))  # fmt: skip
            url = f"s3://bench/locked-{tag}.zarr"
            locked_setup(url)
            wall, _ = run_processes(locked_writer, lambda w, url=url: (url, w), writers, args.units)
            got = locked_read(url)
            rows.append(("lock-object", writers, wall, 0, bool(np.array_equal(got, expected)),
                         int((expected - got).sum())))  # fmt: skip
            prefix = f"icechunk-{tag}"
            icechunk_setup("bench", prefix, endpoint)
            target = ("bench", prefix, endpoint)
            wall, retries = run_processes(
                icechunk_writer, lambda w, t=target: (*t, w), writers, args.units
            )
            got = icechunk_read("bench", prefix, endpoint)
            rows.append(("icechunk", writers, wall, retries, bool(np.array_equal(got, expected)),
                         int((expected - got).sum())))  # fmt: skip
            url = f"s3://bench/shards-{tag}.zarr"
            _zarr_group(f"{url}/_shards")  # the parent group, made once before the writers
            wall, _ = run_processes(shards_writer, lambda w, url=url: (url, w), writers, args.units)
            got, read_s = shards_read(url)
            rows.append(("shards", writers, wall, 0, bool(np.array_equal(got, expected)),
                         int((expected - got).sum())))  # fmt: skip
            rows.append(("shards-read", writers, read_s, 0, True, 0))
            for row in rows[-5:]:
                print(f"{row[0]:<12} writers={row[1]} wall={row[2]:.2f}s retries={row[3]} "
                      f"equal_to_serial={row[4]} counts_lost={row[5]}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait()
    if args.json:
        keys = ("method", "writers", "wall_s", "retries", "equal_to_serial", "counts_lost")
        with open(args.json, "w") as fh:
            json.dump([dict(zip(keys, r, strict=True)) for r in rows], fh, indent=1)


if __name__ == "__main__":
    main()
