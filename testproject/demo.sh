#!/usr/bin/env bash
# The demo: `bash testproject/demo.sh [ADDR:PORT] [--password PW]`. Makes ./.venv if needed,
# migrates (SQLite by default; DATABASE_URL=postgres://... for PostgreSQL), creates the admin
# user, prints the URL and login, and serves. REDIS_URL=redis://... keeps tokens in Redis.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
export DJANGO_SETTINGS_MODULE=testproject.demo.settings
exec python -m django demo "$@"
