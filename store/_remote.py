"""Stores on object storage (``s3://``, ``gs://``, ... through fsspec): what their failures mean.

A remote store is zarr's ``FsspecStore`` inside :class:`RemoteStore`, which turns what the
object-storage client raises (botocore's and aiohttp's exceptions, s3fs's translations of them)
into one langneurons error that names the store, the problem and the fix: an endpoint that
cannot be reached, missing or refused credentials, a bucket that does not exist, no permission
to read or to write. Every operation goes through it, so a failure in the middle of a command
reads the same as one at its start.

Writes to a store on S3 are serialised across processes and machines by a lock object made with
a conditional PUT (:mod:`~langneurons.store._objectlock`); other object stores are serialised
within one process only. While this process holds a store's lock (:func:`fenced`), every write
through a :class:`RemoteStore` of that store first checks the lock's lease, so that a writer
whose lease ran out writes nothing more.

Where an S3 endpoint other than AWS is used (MinIO, Ceph, a local test server), set
``AWS_ENDPOINT_URL`` (botocore reads it), or pass ``storage_options`` through fsspec's
configuration (``FSSPEC_S3_ENDPOINT_URL``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, WrapperStore

from langneurons.errors import (
    InvalidNameError,
    LangneuronsError,
    MissingDependencyError,
    RemoteStoreError,
    StoreNotFoundError,
    StorePermissionError,
)
from langneurons.store._objectlock import ObjectLock

#: Extras that install the fsspec implementation of each protocol.
_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcsfs"),
    "gcs": ("gcsfs", "gcsfs"),
    "az": ("adlfs", "adlfs"),
    "abfs": ("adlfs", "adlfs"),
}
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ConnectionClosedError", "ReadTimeoutError", "ServerDisconnectedError")  # fmt: skip
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")
_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")


_FENCES: dict[str, ObjectLock] = {}  # the write locks this process holds, by store URL


def holds(url: str) -> bool:
    """Whether this process holds the write lock of the store at ``url`` now."""
    return url in _FENCES


@contextlib.contextmanager
def fenced(url: str, lock: ObjectLock) -> Iterator[None]:
    """While held, writes to the store at ``url`` check ``lock``'s lease first."""
    _FENCES[url] = lock
    try:
        yield
    finally:
        _FENCES.pop(url, None)


def open_fsspec(url: str, *, read_only: bool) -> Store:
    """The zarr store of an fsspec URL, its failures translated (see :class:`RemoteStore`)."""
    # no cached directory listings: other processes write the store (a listing cached before
    # another writer's journal or result appeared would hide it for the life of this process)
    options = {} if url.startswith("memory://") else {"use_listings_cache": False}
    try:
        inner = FsspecStore.from_url(url, storage_options=options, read_only=read_only)
    except ImportError as exc:
        protocol = url.split("://", 1)[0]
        package, extra = _EXTRAS.get(protocol, (protocol + "fs", None))
        how = f"pip install 'langneurons[{extra}]'" if extra == "s3" else f"pip install {package}"
        raise MissingDependencyError(
            f"store {url!r} needs the fsspec package for {protocol}:// ({package}); install it "
            f"with {how}"
        ) from exc
    except ValueError as exc:  # an fsspec protocol that is not known at all
        raise RemoteStoreError(f"store {url!r} cannot be opened: {exc}") from exc
    if url.startswith("memory://"):
        return inner  # in-process: nothing to translate
    return RemoteStore(inner, url)


def object_lock(zstore: Store, url: str) -> ObjectLock | None:
    """The cross-process write lock of a store on S3 (None for other stores: see the module)."""
    if not (isinstance(zstore, RemoteStore) and url.startswith(("s3://", "s3a://"))):
        return None
    inner = zstore.inner
    if not isinstance(inner, FsspecStore):
        return None
    if "/" not in inner.path.strip("/"):
        raise InvalidNameError(
            f"store {url!r} is a whole bucket; writes need a store under a prefix, such as "
            f"{url.rstrip('/')}/store.zarr (its write lock lies next to it)"
        )
    return ObjectLock(
        inner.fs, inner.path, url, translate=lambda exc: translate(url, exc, writing=True)
    )


def live_writer(zstore: Store, url: str) -> dict[str, Any] | None:
    """The process that holds the write lock of a store on S3 now, or None (see ObjectLock)."""
    lock = object_lock(zstore, url)
    return lock.holder() if lock is not None else None


def translate(url: str, exc: BaseException, *, writing: bool) -> LangneuronsError | None:
    """The langneurons error ``exc`` from the object store means, or None (not one we know)."""
    if isinstance(exc, LangneuronsError):
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    chain = _chain(exc)
    chain_names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    text = " ".join(str(e) for e in chain)
    if chain_names & set(_NO_CREDENTIALS):
        return RemoteStoreError(
            f"no credentials to access store {url!r}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the object store"
        )
    if chain_names & set(_UNREACHABLE) or isinstance(exc, ConnectionError):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        where = f" at {endpoint}" if endpoint else ""
        return RemoteStoreError(
            f"cannot reach the object store of {url!r}{where} ({_reason(chain)}); check the "
            "endpoint (AWS_ENDPOINT_URL) and that the server is running and reachable"
        )
    code = next((c for c in _BAD_CREDENTIALS if c in text), None)
    if code is not None:
        return StorePermissionError(
            f"the object store refused the credentials for {url!r} ({code}); check "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if "NoSuchBucket" in text or ("FileNotFoundError" in names and "bucket" in text.lower()):
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return StoreNotFoundError(
            f"bucket {bucket!r} of store {url!r} does not exist; create it first (for example "
            f"`aws s3 mb s3://{bucket}`) or check the URL"
        )
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        if writing:
            return StorePermissionError(
                f"no permission to write to store {url!r} (access denied); use credentials "
                "that may write to the bucket, or save results in a writable store with "
                "--results-store"
            )
        return StorePermissionError(
            f"no permission to read store {url!r} (access denied); use credentials that may "
            "read the bucket"
        )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during."""
    out: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        out.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return out


def _reason(chain: list[BaseException]) -> str:
    """The innermost message of a connection failure, on one line."""
    for exc in reversed(chain):
        text = " ".join(str(exc).split())
        if text:
            return text[:200]
    return type(chain[0]).__name__


class RemoteStore(WrapperStore[Store]):
    """An fsspec store whose failures are langneurons errors naming the store (see module)."""

    def __init__(self, store: Store, url: str) -> None:
        super().__init__(store)
        self.url = url

    @property
    def inner(self) -> Store:
        """The fsspec store underneath."""
        return self._store

    def _with_store(self, store: Store) -> RemoteStore:
        return type(self)(store, self.url)

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self._store, "url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["url"])  # type: ignore[misc]

    def _fence(self) -> None:
        """Refuse a write once the lease of this process's lock on the store ran out."""
        lock = _FENCES.get(self.url)
        if lock is not None:
            lock.check()

    def _raise(self, exc: BaseException, writing: bool) -> None:
        mapped = translate(self.url, exc, writing=writing)
        if mapped is not None:
            raise mapped from exc
        raise exc

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        try:
            return await self._store.get(key, prototype, byte_range)
        except Exception as exc:
            self._raise(exc, False)
            raise

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        try:
            return await self._store.get_partial_values(prototype, key_ranges)
        except Exception as exc:
            self._raise(exc, False)
            raise

    async def exists(self, key: str) -> bool:
        try:
            return await self._store.exists(key)
        except Exception as exc:
            self._raise(exc, False)
            raise

    async def is_empty(self, prefix: str) -> bool:
        try:
            return await self._store.is_empty(prefix)
        except Exception as exc:
            self._raise(exc, False)
            raise

    async def set(self, key: str, value: Buffer) -> None:
        self._fence()
        try:
            await self._store.set(key, value)
        except Exception as exc:
            self._raise(exc, True)
            raise

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._fence()
        try:
            await self._store.set_if_not_exists(key, value)
        except Exception as exc:
            self._raise(exc, True)
            raise

    async def delete(self, key: str) -> None:
        self._fence()
        try:
            await self._store.delete(key)
        except Exception as exc:
            self._raise(exc, True)
            raise

    async def delete_dir(self, prefix: str) -> None:
        self._fence()
        try:
            await self._store.delete_dir(prefix)
        except Exception as exc:
            self._raise(exc, True)
            raise

    async def clear(self) -> None:
        self._fence()
        try:
            await self._store.clear()
        except Exception as exc:
            self._raise(exc, True)
            raise

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        self._fence()
        try:
            await self._store._set_many(values)
        except Exception as exc:
            self._raise(exc, True)
            raise

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        try:
            async for item in self._store._get_many(requests):
                yield item
        except Exception as exc:
            self._raise(exc, False)
            raise

    def list(self) -> AsyncIterator[str]:
        return self._listing(self._store.list())

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_prefix(prefix))

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(self._store.list_dir(prefix))

    async def _listing(self, keys: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for key in keys:
                yield key
        except Exception as exc:
            self._raise(exc, False)
            raise
