# Sourced by tests/run.sh: makes ./.venv (Python 3.12+ preferred, for the current Django) with
# the project and its `test` extra (pytest, ruff, mypy, selenium, the OAuth client libraries...)
# and puts it first on PATH. `make_venv` (testproject/venv.sh) makes other environments.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

make_venv .venv newest ".[test]"
export PATH="$PWD/.venv/bin:$PATH"
