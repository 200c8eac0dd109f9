#!/usr/bin/env bash
# The whole test suite: lint and types; pytest on PostgreSQL with every storage backend
# (database, in-memory, locmem, Redis, Redis Cluster, Redis Sentinel); the database tests again
# on SQLite; and the SQLite and in-process tests on the previous Django LTS (5.2, Python 3.11).
# Extra arguments go to the first pytest run.
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

echo "== pytest on Django 5.2 LTS, SQLite and in-process backends"
make_venv .venv-lts 3.11 "django>=5.2,<5.3"
DATABASE_URL="sqlite://" AUTHFW_TEST_BACKENDS=database,memory \
    .venv-lts/bin/python -m pytest -q -p no:cacheprovider -m "not browser and not slow" tests
