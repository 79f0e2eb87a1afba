"""The lease check of the S3 write lock (no object store needed): a holder writes only while a
quarter of the lease it last wrote is left, on its own clock."""

from __future__ import annotations

import time

import pytest

from langneurons.errors import LockLostError
from langneurons.store import _objectlock, _remote


def _lock(monkeypatch: pytest.MonkeyPatch, lease: str = "8") -> _objectlock.ObjectLock:
    monkeypatch.setenv("LANGNEURONS_LOCK_LEASE", lease)
    return _objectlock.ObjectLock(None, "bucket/s.zarr", "s3://bucket/s.zarr")


def test_a_lease_with_more_than_a_quarter_left_lets_writes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = _lock(monkeypatch)
    lock.expires = time.time() + 8
    lock.check()
    lock.expires = time.time() + 2.5  # a quarter is 2 s
    lock.check()


@pytest.mark.parametrize("left", [1.9, 0.0, -30.0, None], ids=["quarter", "end", "past", "never"])
def test_a_lease_near_its_end_refuses_writes(
    monkeypatch: pytest.MonkeyPatch, left: float | None
) -> None:
    lock = _lock(monkeypatch)
    lock.expires = None if left is None else time.time() + left
    with pytest.raises(LockLostError) as info:
        lock.check()
    message = str(info.value)
    assert message.startswith("store 's3://bucket/s.zarr': the write lock's lease ran out (8 s")
    assert "nothing more was written" in message
    assert "`langneurons repair s3://bucket/s.zarr`" in message and "\n" not in message
    late = {1.9: "for 6 s", 0.0: "for 8 s", -30.0: "for 38 s"}.get(left)  # type: ignore[arg-type]
    assert (f"not renewed {late}" in message) if late else ("renewed" not in message)


class _Inner:
    """A store underneath that records the writes reaching it."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    async def set(self, key: str, value: object) -> None:
        self.writes.append(key)

    async def delete(self, key: str) -> None:
        self.writes.append(key)


def test_writes_through_a_remote_store_check_the_held_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    inner = _Inner()
    store = _remote.RemoteStore(inner, "s3://bucket/s.zarr")  # type: ignore[arg-type]
    other = _remote.RemoteStore(_Inner(), "s3://bucket/other.zarr")  # type: ignore[arg-type]
    lock = _lock(monkeypatch)
    lock.expires = time.time() + 8
    with _remote.fenced("s3://bucket/s.zarr", lock):
        asyncio.run(store.set("a", None))  # type: ignore[arg-type]
        lock.expires = time.time() + 1
        with pytest.raises(LockLostError):
            asyncio.run(store.set("b", None))  # type: ignore[arg-type]
        with pytest.raises(LockLostError):
            asyncio.run(store.delete("a"))
        asyncio.run(other.set("c", None))  # type: ignore[arg-type]  # another store: unfenced
    asyncio.run(store.set("d", None))  # type: ignore[arg-type]  # the lock no longer held
    assert inner.writes == ["a", "d"]
