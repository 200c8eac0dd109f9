"""The settings examples of README.md and docs/installation.md, pasted into a fresh project.

Each example is added, as the docs say, at the end of the ``settings.py`` and ``urls.py`` that
``django-admin startproject`` writes; then ``manage.py check`` and ``migrate`` must pass, in a
process of their own. The PostgreSQL example runs against the test server, on a database of
its own, with only the connection (host, name, user, certificates) swapped for the test
server's: its pool and options are kept as written, so a combination Django refuses (a pool with
``CONN_MAX_AGE``) fails here. The README's Python example then runs in ``manage.py shell``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .backends import postgres_server_url

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
INSTALLATION = REPO / "docs" / "installation.md"

_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    """One ```python block: what goes into settings.py, urls.py, or a shell session."""

    source: str
    where: str
    settings: str
    urls: str

    @property
    def is_shell(self) -> bool:
        return self.settings.lstrip().startswith("from django_authfw import")


def examples(path: Path) -> list[Example]:
    found = []
    for match in _FENCE.finditer(path.read_text()):
        block = match.group(1)
        line = path.read_text()[: match.start()].count("\n") + 1
        settings, _, urls = block.partition("# urls.py\n")
        found.append(Example(block, f"{path.name}:{line}", settings, urls))
    return found


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _env() -> dict[str, str]:
    # The project's own settings, not the test suite's.
    return {
        key: value
        for key, value in os.environ.items()
        if key != "DJANGO_SETTINGS_MODULE" and not key.startswith(("AUTHFW_", "PYTEST"))
    }


def new_project(tmp_path: Path) -> Path:
    env = _env()
    result = run(["-m", "django", "startproject", "mysite", str(tmp_path)], tmp_path, env)
    assert result.returncode == 0, result.stderr
    return tmp_path


def check_and_migrate(project: Path, example: Example, extra_settings: str = "") -> None:
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + example.settings + extra_settings)
    if example.urls:
        urls = project / "mysite" / "urls.py"
        urls.write_text(urls.read_text() + "\n" + example.urls)
    env = _env()
    for command in (["check"], ["migrate", "--no-input"]):
        result = run(["manage.py", *command], project, env)
        assert result.returncode == 0, (
            f"`manage.py {' '.join(command)}` fails with the example at {example.where}:\n"
            f"{example.source}\n{result.stdout}\n{result.stderr}"
        )


def _settings_examples(path: Path) -> list[Example]:
    return [example for example in examples(path) if not example.is_shell]


def test_the_docs_have_the_examples_this_file_runs() -> None:
    # A renamed or removed example must not silently leave this file with nothing to run.
    assert len(_settings_examples(README)) == 1
    assert len([e for e in examples(README) if e.is_shell]) == 1
    assert len(_settings_examples(INSTALLATION)) == 5
    assert "from datetime import timedelta" in _settings_examples(README)[0].settings


def test_readme_example_as_pasted(tmp_path: Path) -> None:
    (settings_example,) = _settings_examples(README)
    (shell_example,) = [e for e in examples(README) if e.is_shell]
    project = new_project(tmp_path)
    check_and_migrate(project, settings_example)
    result = run(["manage.py", "shell", "-c", shell_example.source], project, _env())
    assert result.returncode == 0, f"{shell_example.source}\n{result.stdout}\n{result.stderr}"


def _installation_ids() -> list[str]:
    return [example.where for example in _settings_examples(INSTALLATION)]


@pytest.fixture
def postgres_database() -> Iterator[dict[str, str]]:
    """A database of the test's own on the suite's PostgreSQL server, dropped afterwards."""
    import psycopg

    url = urlsplit(postgres_server_url())
    server = {
        "HOST": url.hostname or "127.0.0.1",
        "PORT": str(url.port or 5432),
        "USER": url.username or "postgres",
        "PASSWORD": url.password or "",
    }
    name = f"authfw_docs_{uuid.uuid4().hex[:12]}"
    # The server's maintenance database, reached the way the test server is.
    admin_url = url._replace(path="/postgres", query="connect_timeout=10").geturl()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**server, "NAME": name}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("index", range(len(_installation_ids())), ids=_installation_ids())
def test_installation_example_passes_check_and_migrate(
    tmp_path: Path, request: pytest.FixtureRequest, index: int
) -> None:
    base, *_ = _settings_examples(INSTALLATION)  # the "Settings" block: the app installed
    example = _settings_examples(INSTALLATION)[index]
    extra = ""
    if "django.db.backends.postgresql" in example.settings:
        server = request.getfixturevalue("postgres_database")
        # Only where to connect: the pool, CONN_MAX_AGE and the other options stay as written.
        extra = (
            f"\nDATABASES['default'].update({server!r})\n"
            "for _key in ('sslmode', 'sslrootcert', 'sslcert', 'sslkey'):\n"
            "    DATABASES['default']['OPTIONS'].pop(_key, None)\n"
        )
    project = new_project(tmp_path)
    if example is not base:
        settings = project / "mysite" / "settings.py"
        settings.write_text(settings.read_text() + "\n" + base.settings)
    check_and_migrate(project, example, extra)
