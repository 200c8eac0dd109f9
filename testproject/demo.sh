#!/usr/bin/env bash
# The demo: `bash testproject/demo.sh [ADDR:PORT] [--password PW]` (default 127.0.0.1:8000).
# Makes ./.venv-demo with the project and only what the demo runs (Django, argon2-cffi; the
# `postgres` extra when DATABASE_URL=postgres://..., the `redis` extra when REDIS_URL is set;
# none of the test toolchain), migrates (SQLite by default), sets the admin's password, prints
# the URL and login, and serves. REDIS_URL=redis://... keeps tokens in Redis.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

extras=()
if [[ "${DATABASE_URL:-}" == postgres* ]]; then extras+=(postgres); fi
if [ -n "${REDIS_URL:-}" ]; then extras+=(redis); fi
spec="."
if [ "${#extras[@]}" -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi

make_venv .venv-demo newest "$spec"
export DJANGO_SETTINGS_MODULE=testproject.demo.settings
exec .venv-demo/bin/python -m django demo "$@"
