"""Extra Redis servers for the tests: a 3-master Cluster and a Sentinel group, on loopback only.

Each server is a ``redis-server`` child process started by pid with its data directory in a
pytest tmp dir, and stopped by that pid (never by name) when the fixture ends. Ports come from
the ranges reserved for these tests: 7100-7199 for Cluster nodes, 26400-26499 for Sentinel
groups (the data nodes and the Sentinels); a block already in use is skipped.

The contract suite's builders start the shared Cluster and Sentinel group on first use
(:func:`ensure_cluster`, :func:`ensure_sentinel`, also as the session fixtures
``redis_cluster`` and ``redis_sentinel``); a session-scoped autouse fixture stops them at the
end of the session. The failover test builds its own group with :func:`sentinel_group`,
because it kills a primary.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

HOST = "127.0.0.1"
CLUSTER_PORTS = range(7100, 7190)
SENTINEL_PORTS = range(26400, 26500)
SENTINEL_MASTER = "authfw-test"
SENTINEL_PASSWORD = "sentinel-test-password"
START_TIMEOUT = 20.0


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed; apt-get install redis-server")
    return path


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server binds: a port in TIME_WAIT from an earlier run is free to it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class PortTaken(RuntimeError):
    """Another process bound the port between the check and our server's start."""


def free_block(ports: range, count: int, taken: set[int] | None = None) -> list[int]:
    """``count`` consecutive free ports in ``ports``.

    The search starts at an offset derived from the pid, so that test runs going on at the
    same time (several developers share a machine) rarely race for the same block.
    """
    taken = taken or set()
    starts = list(range(ports.start, ports.stop - count + 1))
    offset = os.getpid() % len(starts)
    for start in starts[offset:] + starts[:offset]:
        block = list(range(start, start + count))
        if not taken.intersection(block) and all(port_free(p) for p in block):
            return block
    raise RuntimeError(f"No {count} free consecutive ports in {ports}")


def wait_until(check: object, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"Timed out waiting for {what} (last error: {last})")


@dataclass
class ServerProcess:
    """One redis-server child process."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=2, **kwargs)  # type: ignore[arg-type]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would: nothing is flushed or handed over."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _die_with_us() -> list[str]:
    """A prefix that makes the server get SIGTERM if this test process dies (killed, timed
    out) without stopping it. The kernel ties it to the forking thread, so only from the main
    thread; the session fixture and atexit stop servers in every other case."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM"]


def start_server(
    port: int,
    directory: Path,
    *args: str,
    config: str | None = None,
    password: str | None = None,
) -> ServerProcess:
    directory.mkdir(parents=True, exist_ok=True)
    command = [*_die_with_us(), redis_server_binary()]
    if config is not None:
        conf = directory / "redis.conf"
        conf.write_text(config)
        command.append(str(conf))
    command += [
        "--port",
        str(port),
        "--bind",
        HOST,
        "--dir",
        str(directory),
        "--logfile",
        str(directory / "redis.log"),
        "--daemonize",
        "no",
        *args,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    server = ServerProcess(port, process, directory)

    def ours_is_up() -> bool:
        if not server.alive:  # it could not bind: someone else took the port
            raise PortTaken(f"port {port} was taken before redis-server could bind it")
        # The server answering must be ours, not another run's that grabbed the port.
        info = server.client(password=password).info("server")
        return int(info["process_id"]) == process.pid

    try:
        wait_until(ours_is_up, f"redis-server on {port}")
    except BaseException:
        server.kill()
        raise
    return server


def private_server(base: Path, *args: str, password: str | None = None) -> ServerProcess:
    """One redis-server of a test's own (no persistence) on a free port of the Cluster range.

    With ``password`` it runs with ``requirepass`` (the tests of refused credentials). The
    caller stops it by pid (``ServerProcess.stop``).
    """
    auth = ("--requirepass", password) if password is not None else ()

    def start(taken: set[int]) -> ServerProcess:
        port = free_block(CLUSTER_PORTS, 1, taken)[0]
        return start_server(
            port,
            base / f"server-{port}",
            "--save",
            "",
            "--appendonly",
            "no",
            *auth,
            *args,
            password=password,
        )

    server: ServerProcess = _with_port_retries(start)
    return server


def connections_received(client: redis.Redis) -> int:
    """How many connections the server of ``client`` accepted since it started.

    Counts connection attempts without timing them: ``client`` keeps its own one connection,
    so after the first call the difference between two readings is what others opened.
    """
    return int(client.info("stats")["total_connections_received"])


@contextmanager
def _servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            server.stop()


@dataclass
class ClusterInfo:
    nodes: list[ServerProcess]

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{node.port}" for node in self.nodes]


def _cluster_ok(client: redis.Redis) -> bool:
    info = client.execute_command("CLUSTER INFO")
    if isinstance(info, bytes | str):  # unparsed reply in some redis-py versions
        text = info.decode() if isinstance(info, bytes) else info
        return "cluster_state:ok" in text
    state = info.get("cluster_state")
    return state in ("ok", b"ok")


def _with_port_retries(make: Any) -> Any:
    """Run ``make(taken)`` again on other ports when a port was grabbed meanwhile."""
    taken: set[int] = set()
    for _ in range(5):
        try:
            return make(taken)
        except PortTaken as exc:
            taken.add(int(str(exc).split()[1]))
    return make(taken)


@contextmanager
def redis_cluster_nodes(base: Path, masters: int = 3) -> Iterator[ClusterInfo]:
    """A Redis Cluster of ``masters`` primaries (no replicas), created with redis-cli."""
    with _servers() as started:

        def start(taken: set[int]) -> list[int]:
            for server in started:
                server.stop()
            started.clear()
            ports = free_block(CLUSTER_PORTS, masters, taken)
            for port in ports:
                started.append(
                    start_server(
                        port,
                        base / f"node-{port}",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    )
                )
            return ports

        ports = _with_port_retries(start)
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *[f"{HOST}:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in started:
            wait_until(
                lambda node=node: _cluster_ok(node.client()),
                f"cluster state ok on {node.port}",
            )
        yield ClusterInfo(started)


@dataclass
class SentinelInfo:
    primary: ServerProcess
    replica: ServerProcess
    sentinels: list[ServerProcess] = field(default_factory=list)
    master_name: str = SENTINEL_MASTER
    password: str = SENTINEL_PASSWORD

    @property
    def sentinel_urls(self) -> list[str]:
        return [f"redis://{HOST}:{s.port}" for s in self.sentinels]

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return self.sentinels[index].client(password=self.password)

    def current_primary_port(self) -> int:
        address = self.sentinel_client().sentinel_get_master_addr_by_name(self.master_name)
        # redis-py types the reply as the pair, None (unknown master) or a bool (pipelined).
        assert isinstance(address, tuple), f"Sentinel knows no primary: {address!r}"
        _host, port = address
        return int(port)


def _sentinel_id(port: int) -> str:
    return hashlib.sha1(f"authfw-sentinel-{port}".encode(), usedforsecurity=False).hexdigest()


def _sentinel_config(
    port: int, primary_port: int, replica_port: int, peers: list[int], directory: Path
) -> str:
    return "\n".join(
        [
            f"port {port}",
            f"bind {HOST}",
            f"dir {directory}",
            f"sentinel monitor {SENTINEL_MASTER} {HOST} {primary_port} 2",
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 800",
            f"sentinel failover-timeout {SENTINEL_MASTER} 4000",
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1",
            # The Sentinels want a password (RedisStorage's sentinel_password) and use it
            # among themselves.
            f"requirepass {SENTINEL_PASSWORD}",
            f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
            # Known up front, so the group is ready at once instead of after rounds of hello
            # messages (every 2 s).
            f"sentinel myid {_sentinel_id(port)}",
            *[
                f"sentinel known-sentinel {SENTINEL_MASTER} {HOST} {peer} {_sentinel_id(peer)}"
                for peer in peers
                if peer != port
            ],
            f"sentinel known-replica {SENTINEL_MASTER} {HOST} {replica_port}",
            "",
        ]
    )


@contextmanager
def sentinel_group(base: Path, taken: set[int] | None = None) -> Iterator[SentinelInfo]:
    """A primary, one replica and three Sentinels watching them (quorum 2)."""
    # No 5 s wait before a full sync (the diskless default), so the replica is up at once.
    data_args = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
    with _servers() as started:

        def start(more_taken: set[int]) -> SentinelInfo:
            for server in started:
                server.stop()
            started.clear()
            ports = free_block(SENTINEL_PORTS, 5, (taken or set()) | more_taken)
            primary_port, replica_port, *sentinel_ports = ports
            primary = start_server(primary_port, base / f"primary-{primary_port}", *data_args)
            started.append(primary)
            replica = start_server(
                replica_port,
                base / f"replica-{replica_port}",
                *data_args,
                "--replicaof",
                HOST,
                str(primary_port),
            )
            started.append(replica)
            wait_until(
                lambda: replica.client().info("replication")["master_link_status"] == "up",
                "the replica to sync",
            )
            info = SentinelInfo(primary, replica)
            for port in sentinel_ports:
                directory = base / f"sentinel-{port}"
                directory.mkdir(parents=True, exist_ok=True)
                sentinel = start_server(
                    port,
                    directory,
                    "--sentinel",
                    config=_sentinel_config(
                        port, primary_port, replica_port, sentinel_ports, directory
                    ),
                    password=SENTINEL_PASSWORD,
                )
                started.append(sentinel)
                info.sentinels.append(sentinel)
            return info

        info = _with_port_retries(start)

        def settled() -> bool:
            for index in range(len(info.sentinels)):
                state = info.sentinel_client(index).sentinel_master(SENTINEL_MASTER)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
            return True

        # Sentinels find each other through hello messages (every 2 s); a failover needs a
        # majority that knows the others.
        wait_until(settled, "the Sentinels to discover each other and the replica", 30)
        yield info


# Started on first use, stopped at the end of the session ----------------------------------

_lock = threading.Lock()
_stack = ExitStack()
_running: dict[str, ClusterInfo | SentinelInfo] = {}


def _base_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="authfw-redis-"))
    _stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


def ensure_cluster() -> ClusterInfo:
    """The session's Redis Cluster, started on first use (contract builders call this)."""
    with _lock:
        if "redis-cluster" not in _running:
            _running["redis-cluster"] = _stack.enter_context(redis_cluster_nodes(_base_dir()))
        info = _running["redis-cluster"]
    assert isinstance(info, ClusterInfo)
    return info


def ensure_sentinel() -> SentinelInfo:
    """The session's Sentinel group, started on first use."""
    with _lock:
        if "redis-sentinel" not in _running:
            _running["redis-sentinel"] = _stack.enter_context(sentinel_group(_base_dir()))
        info = _running["redis-sentinel"]
    assert isinstance(info, SentinelInfo)
    return info


def stop_all() -> None:
    """Stop every server started here (by pid) and remove their data directories."""
    with _lock:
        _running.clear()
        _stack.close()


# A session interrupted before its fixtures finish still stops its servers.
atexit.register(stop_all)


@pytest.fixture(scope="session", autouse=True)
def _stop_redis_servers_at_session_end() -> Iterator[None]:
    yield
    stop_all()


@pytest.fixture(scope="session")
def redis_cluster() -> ClusterInfo:
    """A 3-master Redis Cluster on 127.0.0.1 for the whole test session."""
    return ensure_cluster()


@pytest.fixture(scope="session")
def redis_sentinel() -> SentinelInfo:
    """A primary + replica + 3 Sentinels on 127.0.0.1 for the whole test session."""
    return ensure_sentinel()
