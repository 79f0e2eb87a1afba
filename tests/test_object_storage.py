"""Stores on S3-compatible object storage, against a real S3 protocol server (moto's standalone
server, started here as a subprocess on a free port): a run imported and written to ``s3://``,
identified, read back with plain xarray, exported; and the bad inputs (unreachable endpoint,
missing credentials, a bucket without write permission, a bucket that does not exist), each one
line, a nonzero exit and nothing written.

Writers on object storage are serialised only within one process (no ``flock`` there); several
processes writing one store at once is not covered here (see the README's store section).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons.store import RunMetadata, create_store, open_store
from tests.conftest import make_counts, run_cli

pytestmark = pytest.mark.requires_s3
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: no credentials from anywhere else (files, instance metadata) in the subprocesses we start
NO_AMBIENT = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


@contextlib.contextmanager
def moto_server(**extra: str) -> Iterator[str]:
    """Run ``python -m moto.server`` on a free local port; yield its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**_base_env(), **CREDS, **extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # a TCP connect, not a request: requests count against the auth window
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start on port {port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _fresh_s3fs() -> None:
    """Forget fsspec's cached S3 filesystems (they keep the credentials they were made with)."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty bucket; this process's environment points at the server."""
    import s3fs

    for key, value in {**CREDS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    _fresh_s3fs()
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    yield name
    _fresh_s3fs()


def _objects(bucket: str) -> list[str]:
    import s3fs

    _fresh_s3fs()
    return sorted(s3fs.S3FileSystem().find(bucket))


def _local_store(tmp: Path) -> Path:
    path = tmp / "local.zarr"
    store = create_store(path)
    meta = RunMetadata(model="tiny", corpus="toy", corpus_hash="sha256:" + "0" * 64)
    counts = make_counts(["en", "de", "fr"], layers=4, neurons=8, sequences=3)
    store.create_run(
        "m/base", n_layers=4, n_neurons=8, counts=counts, sequences=True, metadata=meta
    )
    return path


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh process (its own credentials, nothing cached)."""
    return subprocess.run(
        [sys.executable, "-m", "langneurons", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ------------------------------------------------------------------ the pipeline
def test_import_identify_read_with_plain_xarray_and_export_over_s3(
    tmp_path: Path, bucket: str, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    local = _local_store(tmp_path)
    assert run_cli(capsys, "export", local, tmp_path / "s.zip")[0] == 0
    url = f"s3://{bucket}/stores/s.zarr"
    code, out, err = run_cli(capsys, "import", "zip", tmp_path / "s.zip", "--store", url)
    assert code == 0, err
    assert out.strip() == f"unpacked 1 run(s) into {url}"
    code, out, err = run_cli(capsys, "validate", url)
    assert code == 0 and out.strip() == f"ok: 1 run(s) valid in {url}", err
    # identification on the bucket gives, bit for bit, what it gives on the local store
    for store in (url, str(local)):
        code, out, err = run_cli(capsys, "identify", store, "--run", "m/base", "--name", "t")
        assert code == 0, err
    remote = open_store(url).open_result("m/base", "identification", "t").load()
    mine = open_store(local).open_result("m/base", "identification", "t").load()
    for name in ("mask", "neuron_type", "score", "selected", "probability"):
        np.testing.assert_array_equal(remote[name].values, mine[name].values)
    # plain xarray over s3://, counts and the saved result
    options = {"endpoint_url": endpoint}
    plain = xr.open_zarr(url, group="m/base", storage_options=options)
    np.testing.assert_array_equal(
        plain["n_active"].values, open_store(local).open_run("m/base")["n_active"].values
    )
    assert plain.attrs["model"] == "tiny" and plain.attrs["schema_version"] == 2
    result = xr.open_zarr(url, group="m/base/identification/t", storage_options=options)
    np.testing.assert_array_equal(result["mask"].values, mine["mask"].values)
    # and out again, as tables
    code, out, err = run_cli(capsys, "export", url, tmp_path / "pq", "--format", "parquet")
    assert code == 0, err
    assert (tmp_path / "pq" / "m" / "base.parquet").is_file()


def test_journaled_writes_through_the_api_on_s3(bucket: str, tmp_path: Path) -> None:
    """Create a run on S3, merge two shards into it, and find the sum a local store holds."""
    url = f"s3://{bucket}/api.zarr"
    shards = [make_counts(["en", "de"], layers=3, neurons=5, seed=s) for s in (1, 2)]
    for target in (url, str(tmp_path / "serial.zarr")):
        store = create_store(target)
        store.create_run("m/base", n_layers=3, n_neurons=5, languages=["en", "de"])
        writer = store.writer("m/base")
        for i, shard in enumerate(shards):
            writer.merge_counts(shard, unit=f"shard-{i}")
    remote = open_store(url).open_run("m/base")
    serial = open_store(tmp_path / "serial.zarr").open_run("m/base")
    for name in ("n_active", "n_tokens"):
        np.testing.assert_array_equal(remote[name].values, serial[name].values)
    assert open_store(url).committed_units("m/base") == {"shard-0", "shard-1"}
    assert open_store(url).validate() == []
    assert not any("_journal" in key for key in _objects(bucket))


def test_import_njunlp_into_s3(tmp_path: Path, bucket: str, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("torch")
    from tests.conftest import write_reference_files

    write_reference_files(tmp_path / "pt", ["en", "de"])
    url = f"s3://{bucket}/nju.zarr"
    code, out, err = run_cli(capsys, "import", "njunlp", tmp_path / "pt", "--tag", "t",
                             "--languages", "en,de", "--store", url, "--run", "m/base")  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"imported 2 language(s) into {url} run m/base: en de")
    assert open_store(url).languages("m/base") == ["en", "de"]


# ------------------------------------------------------------------ bad input
def test_unreachable_endpoint_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    for key, value in {**CREDS, "AWS_ENDPOINT_URL": dead}.items():
        monkeypatch.setenv(key, value)
    _fresh_s3fs()
    local = _local_store(tmp_path)
    open_store(local).export_zip(tmp_path / "s.zip")
    for args in (
        ["info", "s3://some-bucket/s.zarr"],
        ["import", "zip", tmp_path / "s.zip", "--store", "s3://some-bucket/s.zarr"],
    ):
        code, out, err = run_cli(capsys, *args)
        assert code == 1 and out == ""
        assert err.startswith(
            "langneurons: error: cannot reach the object store of 's3://some-bucket/s.zarr' at "
            f"{dead} ("
        )
        assert err.rstrip().endswith(
            "check the endpoint (AWS_ENDPOINT_URL) and that the server is running and reachable"
        )
        assert len(err.strip().splitlines()) == 1
    _fresh_s3fs()


def test_missing_credentials_is_one_line_and_writes_nothing(
    tmp_path: Path, bucket: str, endpoint: str
) -> None:
    local = _local_store(tmp_path)
    open_store(local).export_zip(tmp_path / "s.zip")
    env = {**_base_env(), **NO_AMBIENT, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "x"}
    url = f"s3://{bucket}/s.zarr"
    for args in (["info", url], ["import", "zip", str(tmp_path / "s.zip"), "--store", url]):
        proc = _cli(*args, env=env)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.strip() == (
            f"langneurons: error: no credentials to access store {url!r}; set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the object store"
        )
    assert _objects(bucket) == []


def test_missing_bucket_is_named(
    tmp_path: Path, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    local = _local_store(tmp_path)
    open_store(local).export_zip(tmp_path / "s.zip")
    url = "s3://no-such-bucket-here/s.zarr"
    code, out, err = run_cli(capsys, "import", "zip", tmp_path / "s.zip", "--store", url)
    assert code == 1
    assert err.strip() == (
        f"langneurons: error: bucket 'no-such-bucket-here' of store {url!r} does not exist; "
        "create it first (for example `aws s3 mb s3://no-such-bucket-here`) or check the URL"
    )


def test_missing_s3fs_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import zarr.storage

    def no_s3fs(*args: object, **kwargs: object) -> object:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(zarr.storage.FsspecStore, "from_url", no_s3fs)
    code, _, err = run_cli(capsys, "info", "s3://b/s.zarr")
    assert code == 1
    assert err.strip() == (
        "langneurons: error: store 's3://b/s.zarr' needs the fsspec package for s3:// (s3fs); "
        "install it with pip install 'langneurons[s3]'"
    )


def test_bucket_without_write_permission(tmp_path: Path) -> None:
    """IAM enforced (moto's INITIAL_NO_AUTH_ACTION_COUNT): a writer and a read-only user."""
    import boto3

    local = _local_store(tmp_path)
    open_store(local).export_zip(tmp_path / "s.zip")
    read = ["s3:GetObject", "s3:ListBucket", "s3:HeadObject", "s3:GetBucketLocation"]
    # moto 5.2.6 checks listings against these names where AWS checks s3:ListBucket (both are
    # read-only, so the user stays a reader under either)
    read += ["s3:ListObjectsV2", "s3:ListObjects"]
    # the setup's seven requests run before auth is enforced: a bucket, two users, their keys
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="7") as url:
        admin = {"endpoint_url": url, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="x", **admin)
        boto3.client("s3", aws_access_key_id="x", aws_secret_access_key="x", **admin).create_bucket(
            Bucket="shared-counts"
        )
        keys = {}
        for user, actions in (("writer", ["s3:*"]), ("reader", read)):
            iam.create_user(UserName=user)
            allow = {"Effect": "Allow", "Action": actions, "Resource": "*"}
            policy = {"Version": "2012-10-17", "Statement": [allow]}
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                **_base_env(),
                **NO_AMBIENT,
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": url,
            }
        store = "s3://shared-counts/s.zarr"
        proc = _cli("import", "zip", str(tmp_path / "s.zip"), "--store", store, env=keys["writer"])
        assert proc.returncode == 0, proc.stderr
        s3 = boto3.client(
            "s3",
            aws_access_key_id=keys["writer"]["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["writer"]["AWS_SECRET_ACCESS_KEY"],
            **admin,
        )

        def objects() -> list[tuple[str, str]]:
            listed = s3.list_objects_v2(Bucket="shared-counts").get("Contents", [])
            return sorted((o["Key"], o["ETag"]) for o in listed)

        before = objects()
        denied = (
            f"langneurons: error: no permission to write to store {store!r} (access denied); "
            "use credentials that may write to the bucket, or save results in a writable store "
            "with --results-store"
        )
        # the reader reads, but cannot write: each write is refused in one line, nothing changes
        proc = _cli("validate", store, env=keys["reader"])
        assert proc.returncode == 0, proc.stderr
        proc = _cli("identify", store, "--run", "m/base", env=keys["reader"])
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert proc.returncode == 1 and errors == [denied]  # (a warning on tiny data may precede)
        other = "s3://shared-counts/other.zarr"
        proc = _cli("import", "zip", str(tmp_path / "s.zip"), "--store", other, env=keys["reader"])
        assert proc.returncode == 1 and proc.stderr.strip() == denied.replace(store, other)
        assert objects() == before
        # what the message suggests works: the results go to a writable store
        results = tmp_path / "results.zarr"
        proc = _cli("identify", store, "--run", "m/base", "--results-store", str(results),
                    env=keys["reader"])  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert open_store(results).results("m/base", "identification")
        assert objects() == before


# ------------------------------------------------------------------ concurrent writers
UNITS = 3


def _writer_code(url: str, writer: int, *, kill_at_flush: bool = False) -> str:
    """A process that merges its UNITS units into ``url`` (or dies in the middle of its first)."""
    kill = (
        "import signal\n"
        "from langneurons.store import _manifest\n"
        "_manifest.flush = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        if kill_at_flush
        else ""
    )
    return (
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from tests.conftest import make_counts\n"
        "from langneurons.store import open_store\n"
        f"{kill}"
        f"writer = open_store({url!r}, mode='r+').writer('m/base')\n"
        f"for unit in range({UNITS}):\n"
        f"    counts = make_counts(['en', 'de'], layers=3, neurons=5, seed=100 * {writer} + unit)\n"
        f"    writer.merge_counts(counts, unit=f'w{writer}-u{{unit}}')\n"
    )


def _serial(tmp: Path, writers: list[int], skip: set[str] = frozenset()) -> object:  # type: ignore[assignment]
    """The run a single local writer makes from the same units, one after another."""
    store = create_store(tmp / f"serial-{uuid.uuid4().hex[:6]}.zarr")
    store.create_run("m/base", n_layers=3, n_neurons=5, languages=["en", "de"])
    for writer in writers:
        for unit in range(UNITS):
            if f"w{writer}-u{unit}" in skip:
                continue
            counts = make_counts(["en", "de"], layers=3, neurons=5, seed=100 * writer + unit)
            store.writer("m/base").merge_counts(counts, unit=f"w{writer}-u{unit}")
    return store.open_run("m/base")


def _start(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_on_s3_equal_a_serial_run(
    tmp_path: Path, bucket: str, endpoint: str, writers: int
) -> None:
    url = f"s3://{bucket}/shared.zarr"
    create_store(url).create_run("m/base", n_layers=3, n_neurons=5, languages=["en", "de"])
    env = {**_base_env(), **CREDS, "AWS_ENDPOINT_URL": endpoint}
    procs = [_start(_writer_code(url, w), env) for w in range(writers)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    remote = open_store(url).open_run("m/base")
    serial = _serial(tmp_path, list(range(writers)))
    for name in ("n_active", "n_tokens", "language"):
        np.testing.assert_array_equal(remote[name].values, serial[name].values)  # type: ignore[index]
    units = {f"w{w}-u{u}" for w in range(writers) for u in range(UNITS)}
    assert open_store(url).committed_units("m/base") == units
    assert open_store(url).validate() == []
    # the lock lies next to the store, released, and only its last generation is kept
    locks = [key for key in _objects(bucket) if key.startswith(f"{bucket}/shared.zarr.lock/")]
    assert len(locks) == 1
    assert int(locks[0].rsplit("/", 1)[-1]) >= writers * UNITS  # each write took the lock
    import s3fs

    assert json.loads(s3fs.S3FileSystem().cat_file(locks[0]))["state"] == "released"
    assert not any(".lock" in key for key in open_store(url).info()["runs"])


def test_a_killed_writer_is_rolled_back_by_the_next_one(
    tmp_path: Path, bucket: str, endpoint: str
) -> None:
    from langneurons.errors import InterruptedWriteError

    url = f"s3://{bucket}/killed.zarr"
    create_store(url).create_run("m/base", n_layers=3, n_neurons=5, languages=["en", "de"])
    # a lease of 3 s: a live writer whose renewal (every 0.75 s) is late by more than 2.25 s
    # stops writing (LockLostError), so a shorter lease could fail a busy machine's writers
    env = {**_base_env(), **CREDS, "AWS_ENDPOINT_URL": endpoint, "LANGNEURONS_LOCK_LEASE": "3"}
    first = _start(_writer_code(url, 0), env)
    assert first.wait(600) == 0, first.stderr.read() if first.stderr else ""
    before = open_store(url).open_run("m/base")["n_active"].values.copy()
    killed = _start(_writer_code(url, 1, kill_at_flush=True), env)
    killed.wait(600)
    assert killed.returncode == -9  # killed mid-write, holding the lock, its journal armed
    _fresh_s3fs()
    time.sleep(3.5)  # the dead writer's lease runs out (while it runs, readers are told to wait)
    with pytest.raises(InterruptedWriteError, match="holds an interrupted write"):
        open_store(url).open_run("m/base")  # readers never see the half-made write
    assert open_store(url).committed_units("m/base") == {f"w0-u{u}" for u in range(UNITS)}
    # the next writer waits out the dead writer's lease, rolls its write back, writes its own
    start = time.monotonic()
    last = _start(_writer_code(url, 2), env)
    assert last.wait(600) == 0, last.stderr.read() if last.stderr else ""
    assert time.monotonic() - start < 120
    remote = open_store(url).open_run("m/base")
    serial = _serial(tmp_path, [0, 2])
    np.testing.assert_array_equal(remote["n_active"].values, serial["n_active"].values)  # type: ignore[index]
    np.testing.assert_array_equal(remote["n_tokens"].values, serial["n_tokens"].values)  # type: ignore[index]
    assert not np.array_equal(before, remote["n_active"].values)
    assert open_store(url).validate() == []


def test_a_writer_that_waits_too_long_for_the_lock_says_who_holds_it(
    tmp_path: Path, bucket: str, endpoint: str
) -> None:
    import s3fs

    from langneurons.errors import RunChangedError
    from langneurons.store import _remote

    url = f"s3://{bucket}/busy.zarr"
    store = create_store(url)
    store.create_run("m/base", n_layers=3, n_neurons=5, counts=make_counts(["en", "de"], layers=3,
                                                                           neurons=5))  # fmt: skip
    # the conditional create the lock rests on: a second create of one key is refused
    fs = s3fs.S3FileSystem()
    fs.pipe_file(f"{bucket}/probe", b"1", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{bucket}/probe", b"2", mode="create")
    fs.rm_file(f"{bucket}/probe")
    before = _objects(bucket)
    env = {**_base_env(), **CREDS, "AWS_ENDPOINT_URL": endpoint, "LANGNEURONS_LOCK_WAIT": "1"}
    lock = _remote.object_lock(store.zarr_store, url)
    assert lock is not None
    with lock:  # another process holds the store's write lock
        held = _objects(bucket)
        proc = _cli("identify", url, "--run", "m/base", "--lambda-range", "0,1", env=env)
        # a reader meeting the holder's write in flight (its journal armed) is told to wait
        journal = f"{bucket}/busy.zarr/m/base/_journal/zarr.json"
        fs.pipe_file(journal, b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
        with pytest.raises(RunChangedError, match=r"'m/base' is being written by another process"):
            open_store(url).open_run("m/base")
        fs.rm_file(journal)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"langneurons: error: store {url!r} is being written by another process (host "
        f"{socket.gethostname()}, pid {os.getpid()}) for more than 1 s; try again later"
    ]
    assert _objects(bucket) == held  # the waiting writer wrote nothing
    # the holder's lock object, next to the store (1 and 2: the store's and the run's creation)
    assert sorted(set(held) - set(before)) == [f"{bucket}/busy.zarr.lock/000000000003"]


def test_a_writer_whose_lease_ran_out_writes_nothing_more(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stopped past its lease (here: its renewals stopped, its write slowed) may have
    lost the lock to another writer: it writes nothing more, not even its rollback, and the
    next writer rolls its write back."""
    import s3fs

    from langneurons.errors import LockLostError
    from langneurons.store import _arrays, _objectlock

    url = f"s3://{bucket}/fenced.zarr"
    store = create_store(url)
    store.create_run("m/base", n_layers=3, n_neurons=5, counts=make_counts(["en", "de"], layers=3,
                                                                           neurons=5))  # fmt: skip
    before = open_store(url).open_run("m/base").load()
    fs = s3fs.S3FileSystem()
    stored = {key: fs.cat_file(key) for key in _objects(bucket) if "/m/base/" in key}

    apply = _arrays.apply

    def stopped(*args: object) -> None:
        time.sleep(1.6)  # a quarter of the 2 s lease left: the writer may no longer write
        apply(*args)  # type: ignore[arg-type]

    extra = make_counts(["de", "fr"], layers=3, neurons=5, seed=4)
    with monkeypatch.context() as patched:
        patched.setenv("LANGNEURONS_LOCK_LEASE", "2")
        patched.setattr(_objectlock.ObjectLock, "_renew", lambda self: None)  # no renewals
        patched.setattr(_arrays, "apply", stopped)
        lost = r"^store 's3://.*': the write lock's lease ran out"
        with pytest.raises(LockLostError, match=lost):
            open_store(url, mode="r+").merge_counts("m/base", extra)
    _fresh_s3fs()
    # nothing of the run was written after the journal, which stays armed for the next writer
    after = {key: fs.cat_file(key) for key in _objects(bucket) if "/m/base/" in key}
    assert {k: v for k, v in after.items() if "/_journal/" not in k} == stored
    assert any(k.endswith("/m/base/_journal/zarr.json") for k in after)
    # the lock was released: the next writer takes it at once, rolls back, writes its own
    start = time.monotonic()
    open_store(url, mode="r+").merge_counts("m/base", extra)
    assert time.monotonic() - start < 2
    ds = open_store(url).open_run("m/base")
    np.testing.assert_array_equal(
        ds.n_active.sel(language="en").values, before.n_active.sel(language="en").values
    )
    np.testing.assert_array_equal(
        ds.n_active.sel(language="de").values,
        before.n_active.sel(language="de").values + extra.n_active[0],
    )
    np.testing.assert_array_equal(ds.n_active.sel(language="fr").values, extra.n_active[1])
    assert open_store(url).validate() == []


def test_two_extraction_shards_from_two_processes_into_one_run_on_s3(
    tmp_path: Path, bucket: str, endpoint: str
) -> None:
    """`langneurons extract --shard 0/2` and `1/2` at once into s3://, equal to one local run."""
    pytest.importorskip("torch")
    from langneurons.extract import tiny_model
    from tests.conftest import write_data

    model = tiny_model("llama", seed=1, path=tmp_path / "llama")
    data = write_data(tmp_path / "data.jsonl", n_items=2)

    def command(store: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "langneurons", "extract", "--model", str(model), "--data",
                str(data), "--store", store, "--run", "m/base", "--device", "cpu", "--dtype",
                "float32", "--per-sequence", "--unit-size", "1", "--batch-tokens", "64",
                *extra]  # fmt: skip

    env = {**_base_env(), **CREDS, "AWS_ENDPOINT_URL": endpoint, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}  # fmt: skip
    local = tmp_path / "serial.zarr"
    proc = subprocess.run(command(str(local)), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    url = f"s3://{bucket}/extracted.zarr"
    procs = [
        subprocess.Popen(
            command(url, "--shard", shard),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        for shard in ("0/2", "1/2")
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    remote = open_store(url).open_run("m/base").load()
    serial = open_store(local).open_run("m/base").load()
    assert sorted(remote.variables) == sorted(serial.variables)
    for name in serial.variables:
        assert remote[name].dtype == serial[name].dtype, name
        if serial[name].dtype.kind in "iuf":
            assert remote[name].values.tobytes() == serial[name].values.tobytes(), name
        else:
            assert [str(x) for x in remote[name].values] == [str(x) for x in serial[name].values]
    assert open_store(url).committed_units("m/base") == open_store(local).committed_units("m/base")
    assert open_store(url).validate() == []


def test_a_store_at_a_bucket_root_is_refused_for_writing(bucket: str) -> None:
    from langneurons.errors import InvalidNameError

    with pytest.raises(InvalidNameError, match=r"is a whole bucket; writes need a store under a"):
        create_store(f"s3://{bucket}")
    assert _objects(bucket) == []


def test_a_long_lived_reader_sees_what_other_processes_commit(
    tmp_path: Path, bucket: str, endpoint: str
) -> None:
    """No directory listing is cached: a result or a journal another process writes is seen."""
    url = f"s3://{bucket}/live.zarr"
    store = create_store(url)
    store.create_run("m/base", n_layers=3, n_neurons=5, languages=["en", "de"])
    assert store.results("m/base", "identification") == []
    assert store.committed_units("m/base") == set()
    env = {**_base_env(), **CREDS, "AWS_ENDPOINT_URL": endpoint}
    proc = _start(_writer_code(url, 0), env)
    assert proc.wait(600) == 0
    proc = _cli("identify", url, "--run", "m/base", "--name", "later", "--lambda-range", "0,1",
                env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert store.results("m/base", "identification") == ["later"]
    assert store.committed_units("m/base") == {f"w0-u{u}" for u in range(UNITS)}


def test_concurrent_creators_of_one_new_store_on_s3(bucket: str, endpoint: str) -> None:
    """Four processes create one new store at once: one writes it, the others open it."""
    url = f"s3://{bucket}/new.zarr"
    code = (
        "from langneurons.store import create_store\n"
        f"store = create_store({url!r})\n"
        "print(store.url)\n"
    )
    env = {**_base_env(), **CREDS, "AWS_ENDPOINT_URL": endpoint}
    procs = [_start(code, env) for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.strip() == url
    assert open_store(url).validate() == [] and open_store(url).runs() == []
