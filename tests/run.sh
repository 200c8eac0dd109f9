#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest on PostgreSQL with every storage backend
# (database, in-memory, locmem, Redis), then the database contract and framework tests again
# on SQLite. Extra arguments go to the first pytest run.
source "$(dirname "$0")/../testproject/bootstrap.sh"

echo "== ruff and mypy"
ruff check .
ruff format --check .
mypy

echo "== pytest on PostgreSQL, every backend"
DATABASE_URL="${AUTHFW_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" \
    pytest "$@"

echo "== pytest on SQLite, database backend"
DATABASE_URL="sqlite://" AUTHFW_TEST_BACKENDS=database \
    pytest -m "not browser and not slow" tests
