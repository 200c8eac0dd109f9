"""Redis URLs are parsed by redis-py's own parser, so every option it knows works.

Before, the storage parsed URLs itself and kept only host, port, db, credentials and the
scheme: a ``rediss://`` URL naming a private CA (``?ssl_ca_certs=``) verified against the
system's CAs and failed, and ``unix://`` sockets were refused. These tests run real servers: a
redis-server with TLS on a free loopback port, with a CA and certificate made for the test by
``openssl``, and one listening on a Unix socket.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_authfw.exceptions import InvalidInput, StorageError
from django_authfw.storage import RedisStorage
from django_authfw.storage.redis.client import parse_url

from .redis_servers import CLUSTER_PORTS, ServerProcess, free_block, private_server


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    base = tmp_path_factory.mktemp("tls")
    # Extensions as Python 3.13's strict verification wants them (a CA key usage, key ids).
    ca = ("-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *ca,
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=authfw test CA", cwd=base,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=base,
    )  # fmt: skip
    (base / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext", cwd=base,
    )  # fmt: skip
    # Another CA, which did not sign the server's certificate.
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *ca,
        "-keyout", "other.key", "-out", "other.pem", "-subj", "/CN=another CA", cwd=base,
    )  # fmt: skip
    return base


@pytest.fixture(scope="module")
def tls_server(certificates: Path) -> Iterator[tuple[ServerProcess, int]]:
    """A redis-server with a plain port (for the harness) and a TLS port."""
    tls_port = free_block(CLUSTER_PORTS, 1)[0]
    server = private_server(
        certificates,
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certificates / "server.pem"),
        "--tls-key-file", str(certificates / "server.key"),
        "--tls-ca-cert-file", str(certificates / "ca.pem"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    yield server, tls_port
    server.stop()


def test_rediss_with_a_private_ca(
    tls_server: tuple[ServerProcess, int], certificates: Path
) -> None:
    server, tls_port = tls_server
    url = f"rediss://127.0.0.1:{tls_port}/3?ssl_ca_certs={certificates / 'ca.pem'}"
    storage = RedisStorage(url=url, key_prefix="authfw-test-tls:", timeout=2, retry_attempts=0)
    try:
        storage.kv_set("greeting", b"over TLS")
        assert storage.kv_get("greeting") == b"over TLS"
        assert server.client(db=3).get("authfw-test-tls:kv:greeting") is not None  # the URL's db
    finally:
        storage.flush()
        storage.close()


def test_rediss_with_the_wrong_ca_is_refused_cleanly(
    tls_server: tuple[ServerProcess, int], certificates: Path
) -> None:
    _, tls_port = tls_server
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certificates / 'other.pem'}"
    storage = RedisStorage(url=url, key_prefix="authfw-test-tls:", timeout=2, retry_attempts=0)
    try:
        with pytest.raises(StorageError):  # a storage error, never a raw ssl or redis error
            storage.kv_get("greeting")
    finally:
        storage.close()


def test_unix_socket(tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    server = private_server(tmp_path, "--unixsocket", str(socket), "--unixsocketperm", "700")
    storage = RedisStorage(url=f"unix://{socket}?db=2", key_prefix="authfw-test-unix:")
    try:
        storage.kv_set("k", b"v")
        assert storage.kv_get("k") == b"v"
        assert server.client(db=2).get("authfw-test-unix:kv:k") is not None
    finally:
        storage.flush()
        storage.close()
        server.stop()


def test_parse_url_defaults_and_errors() -> None:
    assert parse_url("127.0.0.1:6380") == {"host": "127.0.0.1", "port": 6380, "db": 0}
    assert parse_url("redis://h", default_port=26379)["port"] == 26379
    options = parse_url("redis://u:p%40ss@h:1/4?socket_keepalive=true&health_check_interval=5")
    assert (options["username"], options["password"], options["db"]) == ("u", "p@ss", 4)
    assert options["socket_keepalive"] is True
    assert options["health_check_interval"] == 5
    with pytest.raises(InvalidInput, match="scheme 'http'"):
        parse_url("http://h:1")
    with pytest.raises(InvalidInput) as bad:
        parse_url("redis://user:s3cret@h:1/0?socket_timeout=soon")
    assert "socket_timeout" in str(bad.value)
    assert "s3cret" not in str(bad.value)
