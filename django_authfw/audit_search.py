"""Full-text search of the audit log on PostgreSQL: the one vector, its query, its index.

The search box of the audit admin matches words of an event's user id, action, resource, user
agent and metadata string values: an event matches when it has every word typed
(``plainto_tsquery``), with the ``simple`` configuration: words are lower-cased and never
stemmed or dropped, because what an operator types here is a username, a token id, a reason
code or a user agent, not prose. Plain words rather than web-search syntax: its phrases
(``unknown_user`` is parsed as the phrase "unknown user") need every candidate row's vector
recomputed to check word positions, which costs a second on a million rows for a common
phrase, while words alone are answered by the index.

The whole search is one ``vector @@ query`` condition that the GIN index answers: the user ids
of a username typed in the box are added to the query as words (the vector holds the user id)
rather than as an ``OR user_id IN (...)``, because with an ``OR`` of two different indexes the
planner may walk the log in time order and compute the vector of every row it passes (seconds,
on a million rows, for a word that occurs only in old events).

:func:`search_vector` is the one expression both sides use: the admin filters with it, and
migration ``0003`` builds the GIN index ``idx_audit_search`` by compiling the same expression,
so that the index expression is the query's to the character (the planner uses an expression
index only for an identical expression). ``tests/test_audit_search.py`` checks in the plan
that it does. The migration then runs ``ANALYZE``: without statistics on the expression the
planner guesses how many rows a word matches, and guesses badly.

``django.contrib.postgres`` needs psycopg, and is not needed in ``INSTALLED_APPS`` for these
expressions; it is imported only when the database is PostgreSQL, so that the app still
imports on SQLite without psycopg installed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import Func, Q, TextField, Value
from django.db.models.functions import Replace

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model

#: ``simple``: lower-cased words, no stemming, no stop words.
CONFIG = "simple"
#: The GIN index on :func:`search_vector`, PostgreSQL only (migration 0003).
INDEX_NAME = "idx_audit_search"
#: Columns whose words are searched; metadata is searched by its string values.
TEXT_COLUMNS = ("user_id", "action", "resource", "user_agent")
JSON_COLUMN = "metadata"


def available(using: str) -> bool:
    """Whether the database behind ``using`` has full-text search (PostgreSQL)."""
    return connections[using].vendor == "postgresql"


def search_vector() -> Any:
    """The ``tsvector`` of an audit event: its text columns, then its metadata's values.

    ``to_tsvector('simple', user_id || ' ' || action || ' ' || resource || ' ' || user_agent)``
    (with the user agent's slashes as spaces)
    joined with ``jsonb_to_tsvector('simple', metadata, '["string"]')``: metadata keys
    (``username``, ``reason``) are not words of the event, and neither are its numbers
    (counts, windows), which would make a numeric user id match most events.
    """
    from django.contrib.postgres.search import SearchVector

    columns: list[Any] = [
        # "okhttp/4.12.0" is one word to the parser (a file name): the product and its
        # version become two, so that "okhttp" finds it.
        Replace(column, Value("/"), Value(" "), output_field=TextField())
        if column == "user_agent"
        else column
        for column in TEXT_COLUMNS
    ]
    return SearchVector(*columns, config=CONFIG) + _json_values_vector_class()(
        JSON_COLUMN, config=CONFIG
    )


def search_condition(term: str, user_ids: Iterable[str] = ()) -> Q:
    """The events whose vector has every word of ``term``, or those of one of ``user_ids``."""
    from django.contrib.postgres.search import SearchQuery, SearchVectorExact

    # Split as the user agents are in the vector ("okhttp/4.12.0": "okhttp", "4.12.0").
    query = SearchQuery(term.replace("/", " "), config=CONFIG, search_type="plain")
    for user_id in user_ids:
        query = query | SearchQuery(user_id, config=CONFIG, search_type="plain")
    return Q(SearchVectorExact(search_vector(), query))


def index_sql(model: type[Model], connection: BaseDatabaseWrapper) -> str:
    """``CREATE INDEX CONCURRENTLY`` of the GIN index on :func:`search_vector` for ``model``.

    The expression is compiled as the admin's queries compile it (parameters merged the same
    way), without table qualification, as an index expression must be.
    """
    from django.db.models.sql import Query

    query = Query(model, alias_cols=False)
    compiler = query.get_compiler(connection=connection)
    expression = search_vector().resolve_expression(query, allow_joins=False)
    sql, params = compiler.compile(expression)
    table = connection.ops.quote_name(model._meta.db_table)
    statement = (
        f"CREATE INDEX CONCURRENTLY {connection.ops.quote_name(INDEX_NAME)} "
        f"ON {table} USING gin (({sql}))"
    )
    # PostgreSQL's operations merge parameters client-side as psycopg does for the admin's
    # queries, so that both render the expression alike.
    return str(connection.ops.compose_sql(statement, params))  # type: ignore[attr-defined]


def drop_index_sql(connection: BaseDatabaseWrapper) -> str:
    """The reverse of :func:`index_sql`."""
    return f"DROP INDEX CONCURRENTLY IF EXISTS {connection.ops.quote_name(INDEX_NAME)}"


@functools.cache
def _json_values_vector_class() -> type[Any]:
    # Made on first use: its base classes come from django.contrib.postgres (psycopg).
    from django.contrib.postgres.search import (
        SearchConfig,
        SearchVectorCombinable,
        SearchVectorField,
    )

    class JsonValuesVector(SearchVectorCombinable, Func):
        """``jsonb_to_tsvector(config, column, '["string"]')``, combinable with
        ``SearchVector`` by ``+`` (SQL ``||``)."""

        function = "jsonb_to_tsvector"
        template = "%(function)s(%(config)s, %(expressions)s, '[\"string\"]'::jsonb)"
        output_field = SearchVectorField()

        def __init__(self, expression: Any, *, config: str) -> None:
            super().__init__(expression)
            self.config = SearchConfig.from_parameter(config)

        def resolve_expression(self, *args: Any, **kwargs: Any) -> Any:
            resolved = super().resolve_expression(*args, **kwargs)
            resolved.config = self.config.resolve_expression(*args, **kwargs)
            return resolved

        def as_sql(
            self,
            compiler: Any,
            connection: Any,
            function: str | None = None,
            template: str | None = None,
            arg_joiner: str | None = None,
            **extra_context: Any,
        ) -> tuple[str, tuple[Any, ...]]:
            config_sql, config_params = compiler.compile(self.config)
            sql, params = super().as_sql(
                compiler,
                connection,
                function,
                template,
                arg_joiner,
                config=config_sql,
                **extra_context,
            )
            return sql, (*config_params, *params)

    return JsonValuesVector
