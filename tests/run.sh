#!/usr/bin/env bash
# The whole test suite: lint and types; every test on PostgreSQL with every storage backend
# (database, in-memory, locmem, Redis, Redis Cluster, Redis Sentinel); the fault-injection
# group (tests/faults: servers of its own, killed mid-loop); then the tests that depend on the
# database vendor or the Django version again on SQLite, and on the previous Django LTS (5.2,
# Python 3.11). Extra arguments go to the first pytest run.
source "$(dirname "$0")/../testproject/bootstrap.sh"

echo "== ruff and mypy"
ruff check .
ruff format --check .
mypy

echo "== pytest on PostgreSQL, every backend"
DATABASE_URL="${AUTHFW_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" \
    pytest --ignore=tests/faults "$@"

# Its own PostgreSQL cluster (initdb/pg_ctl as the postgres user, so run as root) and Redis
# servers on free loopback ports; it prints its counts (-s). It fails, not skips, on a machine
# that cannot run it.
echo "== fault injection: Redis SIGKILL, PostgreSQL restart, authfw_migrate SIGKILL, failover"
DATABASE_URL="${AUTHFW_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" \
    pytest -m faults -s -p no:cacheprovider tests/faults

# Storage, framework, HTTP, admin and operations (migration to and from SQLite, restores into
# it); the concurrency, live-server, browser and bench suites ran above.
VENDOR_TESTS=(tests/contract tests/test_database_storage.py tests/test_framework.py
    tests/test_signals.py tests/test_checks.py tests/test_views.py tests/test_admin.py
    tests/test_admin_dashboard.py tests/test_audit_search.py
    tests/test_migration.py tests/test_backup.py tests/test_backup_signing.py
    tests/test_backup_users.py tests/test_cleanup_command.py tests/test_lockout.py
    tests/test_refresh_grace.py tests/test_framework_registration.py tests/test_hostile_input.py)

echo "== pytest on SQLite, database backend"
DATABASE_URL="sqlite://" AUTHFW_TEST_BACKENDS=database \
    pytest -m "not browser and not slow" "${VENDOR_TESTS[@]}"

echo "== pytest on Django 5.2 LTS, SQLite and in-process backends"
make_venv .venv-lts 3.11 ".[test]" "django>=5.2,<5.3"
DATABASE_URL="sqlite://" AUTHFW_TEST_BACKENDS=database,memory \
    .venv-lts/bin/python -m pytest -q -p no:cacheprovider -m "not browser and not slow" \
    "${VENDOR_TESTS[@]}"
