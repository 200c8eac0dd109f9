"""A PostgreSQL cluster of the fault tests' own, on a free loopback port.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user (``runuser``; the tests run as root in
CI) on a data directory in a temporary directory owned by that user. The server listens on
127.0.0.1 only, with its Unix socket in its own directory, and is stopped by the postmaster's
pid (from ``postmaster.pid``), never by name: the machine's own PostgreSQL on 5432 is never
touched.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..redis_servers import HOST, free_block

PG_PORTS = range(25400, 25500)
PG_USER = "postgres"
START_TIMEOUT = 60


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    return Path(found[-1]).parent if found else None


def _postgres_program(name: str) -> str:
    """The path of the server program ``name`` (``initdb``, ``pg_ctl``)."""
    directory = postgres_bin()
    if directory is None:  # missing_prerequisites() skips the tests before this is reached
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return str(directory / name)


def missing_prerequisites() -> str | None:
    """Why this machine cannot run a cluster of our own, or None if it can."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is not installed"
    if os.geteuid() != 0:
        return "initdb must run as the postgres user: run the fault tests as root"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} user"
    return None


def _as_postgres(*command: str, timeout: float = START_TIMEOUT) -> None:
    subprocess.run(
        ["runuser", "-u", PG_USER, "--", *command],
        check=True,
        capture_output=True,
        timeout=timeout,
    )


@dataclass
class PostgresCluster:
    """A running (or stopped) cluster: ``start()``, ``crash()``, ``stop()``."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "authfw") -> str:
        return f"postgres://{PG_USER}@{HOST}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=HOST, port=self.port, user=PG_USER, dbname=database, autocommit=True
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (from ``postmaster.pid``)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> None:
        """Start the server and wait until it accepts connections (``pg_ctl start -w``)."""
        options = (
            f"-c port={self.port} -c listen_addresses={HOST} "
            f"-c unix_socket_directories={self.socket_dir} "
            # Small: this cluster holds a few thousand rows.
            "-c shared_buffers=16MB -c max_connections=40"
        )
        _as_postgres(
            _postgres_program("pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
        )

    def _signal_and_wait(self, signum: int) -> None:
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signum)
        deadline = time.monotonic() + START_TIMEOUT
        while self.pid is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise RuntimeError(f"PostgreSQL (pid {pid}) did not stop; killed it")
            time.sleep(0.05)

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT to the postmaster): every backend ends at once, no
        checkpoint, crash recovery on the next start; clients see their connections drop."""
        self._signal_and_wait(signal.SIGQUIT)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster): sessions end, then a checkpoint."""
        self._signal_and_wait(signal.SIGINT)


def _make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="authfw-faults-pg-"))
    entry = pwd.getpwnam(PG_USER)
    for path in (root, root / "socket"):
        path.mkdir(exist_ok=True)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    return root


def create_cluster() -> PostgresCluster:
    """initdb a new cluster, start it on a free port and create the database ``authfw``."""
    root = _make_root()
    cluster = None
    try:
        _as_postgres(
            _postgres_program("initdb"),
            "-D",
            str(root / "data"),
            "-U",
            PG_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        for _ in range(5):  # another run may take the port between the check and the start
            cluster = PostgresCluster(root, free_block(PG_PORTS, 1)[0])
            try:
                cluster.start()
                break
            except subprocess.CalledProcessError:
                if cluster.pid is not None:
                    raise
        else:
            raise RuntimeError("could not start PostgreSQL on a free port")
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE authfw")
    except BaseException:
        remove_cluster(cluster, root)
        raise
    atexit.register(remove_cluster, cluster, root)
    return cluster


def remove_cluster(cluster: PostgresCluster | None, root: Path) -> None:
    """Stop the cluster by its pid and delete its directory."""
    if cluster is not None:
        cluster.stop()
    shutil.rmtree(root, ignore_errors=True)
