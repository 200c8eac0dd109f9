"""Migration operations of django_authfw that depend on the database vendor.

Indexes on the audit log are built while the application keeps writing to it: every login
writes an event, and a refused audit write refuses the login. So on PostgreSQL they are built
with ``CREATE INDEX CONCURRENTLY`` (which takes no lock that blocks inserts), in a migration
marked ``atomic = False``; other databases build them as ``AddIndex`` always does.

Django's own ``AddIndexConcurrently`` and ``GinIndex`` live in ``django.contrib.postgres``,
which imports psycopg: a migration importing them would not load on an installation without
it (SQLite only). These do the same with nothing but Django's core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import migrations
from django.db.migrations.operations.base import Operation

from . import audit_search

if TYPE_CHECKING:
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.migrations.state import ProjectState


def _postgresql(schema_editor: BaseDatabaseSchemaEditor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


def _ready(schema_editor: BaseDatabaseSchemaEditor, name: str) -> bool:
    """Whether the PostgreSQL index ``name`` exists and is valid; drop it if it is invalid.

    A concurrent build that was interrupted leaves an INVALID index behind, and a migration
    that is not atomic may have built some of its indexes before it failed: running
    ``migrate`` again then finishes the job instead of failing on an existing index.
    """
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s AND pg_catalog.pg_table_is_visible(c.oid)",
            [name],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    if row[0]:
        return True
    schema_editor.execute(f"DROP INDEX CONCURRENTLY {schema_editor.quote_name(name)}")
    return False


def _exists(
    schema_editor: BaseDatabaseSchemaEditor,
    state: ProjectState,
    app_label: str,
    model_name: str,
    name: str,
) -> bool:
    """Whether the table of ``model_name`` already has an index called ``name`` (any vendor)."""
    connection = schema_editor.connection
    table = state.apps.get_model(app_label, model_name)._meta.db_table
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            return False
        return name in connection.introspection.get_constraints(cursor, table)


class AddIndexConcurrently(migrations.AddIndex):
    """``AddIndex``, built without blocking writes on PostgreSQL (``CONCURRENTLY``).

    The migration holding it must set ``atomic = False``.
    """

    atomic = False

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if not _postgresql(schema_editor):
            # Not atomic here either (the migration is not): an index built before a run
            # stopped is kept, as on PostgreSQL, rather than failing the next run.
            if not _exists(schema_editor, to_state, app_label, self.model_name, self.index.name):
                super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model) and not _ready(
            schema_editor, self.index.name
        ):
            # The PostgreSQL schema editor's own option.
            schema_editor.add_index(model, self.index, concurrently=True)  # type: ignore[call-arg]

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if not _postgresql(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)  # type: ignore[call-arg]


class AddAuditSearchIndex(Operation):
    """The GIN index of the audit log's full-text search, on PostgreSQL; nothing elsewhere.

    It is not part of the models' state (no ``Meta.indexes`` entry): the state is the same on
    every database, and the index exists on one vendor only. Its expression is
    :func:`django_authfw.audit_search.search_vector`, compiled as the admin's query compiles
    it, so that the planner can use it.
    """

    reversible = True
    atomic = False
    reduces_to_sql = True

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        super().__init__()

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__qualname__, [], {"model_name": self.model_name}

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if (
            _postgresql(schema_editor)
            and self.allow_migrate_model(schema_editor.connection.alias, model)
            and not _ready(schema_editor, audit_search.INDEX_NAME)
        ):
            schema_editor.execute(audit_search.index_sql(model, schema_editor.connection))
            # Statistics of the new expression: without them the planner guesses how many
            # events a word matches (and may then read the log in time order instead).
            schema_editor.execute(f"ANALYZE {schema_editor.quote_name(model._meta.db_table)}")

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if _postgresql(schema_editor) and self.allow_migrate_model(
            schema_editor.connection.alias, model
        ):
            schema_editor.execute(audit_search.drop_index_sql(schema_editor.connection))

    def describe(self) -> str:
        return f"Create the full-text search index {audit_search.INDEX_NAME} (PostgreSQL only)"

    @property
    def migration_name_fragment(self) -> str:
        return "audit_search_index"
