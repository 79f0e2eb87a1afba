"""The write lock of a store on S3: lock objects created with a conditional PUT, held by lease.

Object storage has no ``flock``. What S3 (and MinIO, Ceph, moto) does offer is an atomic
create-if-absent, ``PUT`` with ``If-None-Match: *``: of several writers creating one key, exactly
one succeeds. The lock of the store ``s3://b/p/s.zarr`` is the series of objects
``s3://b/p/s.zarr.lock/<generation>``, next to the store (so no store key, export or listing
ever sees it):

- to take the lock, a writer reads the newest generation ``g``; when there is none, or it is
  released, or its lease has expired, the writer creates generation ``g + 1`` with the
  conditional PUT. Only one writer can create it; the others wait and look again.
- the holder renews its lease (``expires``, wall-clock seconds) every quarter lease from a
  thread, and releases the lock by writing ``"state": "released"`` into its own object.
- a holder that was killed stops renewing: once its lease has run out the next writer takes a
  new generation, and the store's journal rolls its interrupted write back, as on a local disk.

A writer waits for the lock up to :data:`WAIT_S` seconds (``LANGNEURONS_LOCK_WAIT``), then fails
with one line naming the holder. The lease is :data:`LEASE_S` seconds (``LANGNEURONS_LOCK_LEASE``
overrides it); the clocks of
the writing machines must agree to well within it.

A holder stopped for longer than its lease (suspended, not killed) can lose its lock to another
writer. It fences itself: each write to the store first checks, on its own clock, that a quarter
of the lease it last wrote is still left (:meth:`ObjectLock.check`), and once it is not, writes
nothing more (not even a rollback: the next holder rolls its journal back) and fails with
:class:`~langneurons.errors.LockLostError`. What this cannot cover is a stop inside one request,
after the check (``docs/design/storage.md``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from zarr.core.sync import sync

from langneurons.errors import LockLostError, LockTimeoutError

log = logging.getLogger(__name__)

LEASE_S = 120.0
WAIT_S = 3600.0  # how long a writer waits for the lock before giving up
POLL_S = 0.25


def wait_limit() -> float:
    """How long a writer waits for the lock (``LANGNEURONS_LOCK_WAIT`` or :data:`WAIT_S`)."""
    try:
        return max(0.0, float(os.environ.get("LANGNEURONS_LOCK_WAIT", WAIT_S)))
    except ValueError:
        return WAIT_S


def lease() -> float:
    """The lease of a lock, in seconds (``LANGNEURONS_LOCK_LEASE`` or :data:`LEASE_S`)."""
    try:
        return max(1.0, float(os.environ.get("LANGNEURONS_LOCK_LEASE", LEASE_S)))
    except ValueError:
        return LEASE_S


class ObjectLock:
    """The write lock of one store on S3 (see the module); one instance per acquisition."""

    def __init__(
        self,
        fs: Any,
        root: str,
        url: str,
        *,
        wait: float | None = None,
        translate: Callable[[BaseException], BaseException | None] = lambda exc: None,
    ) -> None:
        self.fs = fs  # an asynchronous s3fs filesystem
        self.translate = translate  # what the object store's failures mean (one line)
        self.dir = root.rstrip("/") + ".lock"
        self.url = url
        self.wait = wait_limit() if wait is None else wait
        self.lease = lease()
        self.token = uuid.uuid4().hex
        self.generation: int | None = None
        self.expires: float | None = None  # the end of the lease last written (wall clock)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _run(self, coro: Any) -> None:
        try:
            sync(coro)
        except Exception as exc:
            mapped = self.translate(exc)
            if mapped is not None:
                raise mapped from exc
            raise

    def __enter__(self) -> ObjectLock:
        self._run(self._acquire())
        self._renewer = threading.Thread(target=self._renew, name="langneurons-lock", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        self._run(self._write("released"))

    # ------------------------------------------------------------------ the objects
    def _path(self, generation: int) -> str:
        return f"{self.dir}/{generation:012d}"

    def _body(self, state: str, expires: float) -> bytes:
        return json.dumps(
            {
                "state": state,
                "owner": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires": expires,
            }
        ).encode()

    def check(self) -> None:
        """Raise LockLostError unless a quarter of the lease last written is still left.

        Other writers take the lock once its lease has run out on their clocks; a holder whose
        lease renewals stopped (the process was stopped, or the object store was unreachable)
        stops writing first. Normally at least three quarters are left: the lease is renewed
        every quarter.
        """
        left = None if self.expires is None else self.expires - time.time()
        if left is None or left < self.lease / 4:
            late = "" if left is None else f", not renewed for {self.lease - left:.0f} s"
            raise LockLostError(
                f"store {self.url!r}: the write lock's lease ran out ({self.lease:.0f} s{late}: "
                "the process was stopped or could not reach the object store); nothing more "
                "was written, and the next writer (or "
                f"`langneurons repair {self.url}`) rolls the interrupted write back; run the "
                "command again"
            )

    async def _generations(self) -> list[int]:
        try:
            names = await self.fs._ls(self.dir, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            leaf = str(name).rstrip("/").rsplit("/", 1)[-1]
            if leaf.isdigit():
                out.append(int(leaf))
        return sorted(out)

    async def _read(self, generation: int) -> dict[str, Any] | None:
        try:
            return dict(json.loads(await self.fs._cat_file(self._path(generation))))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"state": "released"}  # not ours to read: a damaged lock object holds nothing

    async def _create(self, generation: int) -> bool:
        """Create generation ``generation`` if no one has (the conditional PUT)."""
        expires = time.time() + self.lease
        try:
            await self.fs._pipe_file(
                self._path(generation), self._body("held", expires), mode="create"
            )
        except FileExistsError:
            return False
        except OSError as exc:  # some servers answer 412 without naming the condition
            if "Precondition" in str(exc) or "412" in str(exc):
                return False
            raise
        self.expires = expires
        return True

    async def _write(self, state: str) -> None:
        if self.generation is not None:
            expires = time.time() + self.lease
            await self.fs._pipe_file(self._path(self.generation), self._body(state, expires))
            self.expires = expires if state == "held" else None

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (host, pid, lease); None when it is free or its lease ran out."""

        async def newest() -> dict[str, Any] | None:
            generations = await self._generations()
            info = await self._read(generations[-1]) if generations else None
            if info is None or info.get("state") != "held":
                return None
            return info if float(info.get("expires", 0)) >= time.time() else None

        found = sync(newest())
        return found if isinstance(found, dict) else None

    # ------------------------------------------------------------------ acquire and renew
    async def _acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        while True:
            generations = await self._generations()
            top = generations[-1] if generations else 0
            holder = await self._read(top) if top else None
            free = holder is None or holder.get("state") == "released"
            if not free and float(holder.get("expires", 0)) < time.time():  # type: ignore[union-attr]
                log.warning(
                    "taking the write lock of %s from %s pid %s, whose lease ran out (a writer "
                    "that was killed; its interrupted write is rolled back)",
                    self.url,
                    holder.get("host"),  # type: ignore[union-attr]
                    holder.get("pid"),  # type: ignore[union-attr]
                )
                free = True
            if free and await self._create(top + 1):
                self.generation = top + 1
                for old in generations:  # released or dead: the newest is ours now
                    try:
                        await self.fs._rm_file(self._path(old))
                    except FileNotFoundError:
                        pass
                return
            if time.monotonic() > deadline:
                raise LockTimeoutError(
                    f"store {self.url!r} is being written by another process (host "
                    f"{holder.get('host') if holder else '?'}, pid "
                    f"{holder.get('pid') if holder else '?'}) for more than {self.wait:.0f} s; "
                    "try again later"
                )
            await asyncio.sleep(POLL_S)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                sync(self._write("held"))
            except Exception as exc:  # the next renewal tries again
                log.warning("could not renew the write lock of %s: %s", self.url, exc)
