"""The storage layer imports nothing above the records layer (docs/architecture.md, "Layers").

Every module under ``django_authfw/storage`` is parsed with :mod:`ast`, and every import in it
is checked, at module level, inside functions and under ``if TYPE_CHECKING:`` alike: a lazy
import is still a dependency. Allowed are the standard library, Django, third-party packages,
and of this package only layer 1 (``records``, ``tokens``, ``exceptions``, ``validate``,
``conf``, ``actions``) and the storage package itself. Operations (``backup``, ``migration``)
call the contract, never the other way round; ``create_backup`` reaches the backup format
through the writer ``django_authfw.backup`` registers (``register_backup_writer``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

import django_authfw
from django_authfw.storage import AuthStorage, InMemoryStorage
from django_authfw.storage.base import register_backup_writer

PACKAGE = "django_authfw"
PACKAGE_DIR = Path(django_authfw.__file__).parent
STORAGE_DIR = PACKAGE_DIR / "storage"
ALLOWED = tuple(
    f"{PACKAGE}.{name}"
    for name in ("records", "tokens", "exceptions", "validate", "conf", "actions", "storage")
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    source: str, module: str, *, is_package: bool = False
) -> list[tuple[int, str]]:
    """Every module an import statement of ``source`` names, absolute, with its line number.

    ``from django_authfw import a, b`` (``from .. import a, b`` in ``storage/``) yields
    ``django_authfw.a`` and ``django_authfw.b``: the modules it names.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base == PACKAGE:  # from .. import validate: judged by the module it names
                found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, base))
    return found


def is_allowed(name: str) -> bool:
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return True  # the standard library, Django, third-party packages
    if name == PACKAGE:
        return True  # the package itself (``from .. import x`` is judged by x)
    return any(name == allowed or name.startswith(f"{allowed}.") for allowed in ALLOWED)


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    return [
        f"{module}:{line} imports {name}"
        for line, name in imported_modules(source, module, is_package=is_package)
        if not is_allowed(name)
    ]


def test_storage_modules_import_nothing_above_the_records_layer() -> None:
    paths = sorted(STORAGE_DIR.rglob("*.py"))
    assert len(paths) > 5  # the walk found the storage modules
    found = [
        violation
        for path in paths
        for violation in violations(
            path.read_text(), module_name(path), is_package=path.name == "__init__.py"
        )
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "def create_backup(self, path):\n    from ..backup import write_backup\n",
        "if TYPE_CHECKING:\n    from ..framework import AuthFramework\n",
        "from .. import migration\n",
        "import django_authfw.models\n",
        "def f():\n    import django_authfw.views as views\n",
    ],
)
def test_the_check_finds_an_import_from_above(source: str) -> None:
    assert violations(source, "django_authfw.storage.example") != []


def test_the_check_allows_layer_one_the_storage_package_and_outside_packages() -> None:
    source = (
        "import json\nfrom django.db import models\nimport redis\n"
        "from .. import validate\nfrom ..records import AuthToken\nfrom ..conf import conf\n"
        "from . import codec\nfrom .base import AuthStorage\n"
        "def f():\n    from ..exceptions import InvalidInput\n    from ..tokens import check_id\n"
    )
    assert violations(source, "django_authfw.storage.example") == []


def test_create_backup_without_a_registered_writer_says_what_to_do(tmp_path: Path) -> None:
    storage: AuthStorage = InMemoryStorage(cleanup_interval=None)
    previous = register_backup_writer(None)
    try:
        with pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"):
            storage.create_backup(tmp_path / "backup.gz")
    finally:
        register_backup_writer(previous)
        storage.close()
    assert previous is not None  # AuthfwConfig.ready() imported django_authfw.backup
    assert not (tmp_path / "backup.gz").exists()


def test_backend_path_is_the_public_one_for_shipped_backends() -> None:
    from django_authfw.storage import backend_path

    from .dict_backend import DictStorage

    assert backend_path(InMemoryStorage(cleanup_interval=None)) == (
        "django_authfw.storage.InMemoryStorage"
    )
    assert backend_path(DictStorage()) == "tests.dict_backend.DictStorage"
