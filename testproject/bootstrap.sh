# Sourced by tests/run.sh and testproject/demo.sh. `make_venv DIR "pip args"` makes a virtual
# environment with a Python >= 3.11 and installs the project with its test extras into it;
# sourcing this file makes ./.venv (Python 3.12+ preferred, for the current Django) and puts it
# first on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_candidates() {
    local pyenv="${PYENV_ROOT:-$HOME/.pyenv}/versions"
    case "$1" in
        newest) echo "${AUTHFW_PYTHON:-} python3.13 python3.12 $pyenv/3.13*/bin/python3" \
            "$pyenv/3.12*/bin/python3 python3.11 python3" ;;
        3.11) echo "${AUTHFW_LTS_PYTHON:-} python3.11 $pyenv/3.11*/bin/python3 python3" ;;
    esac
}

find_python() {
    local candidate
    for candidate in $(python_candidates "$1"); do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "No Python 3.11 or newer found; set AUTHFW_PYTHON to one." >&2
    return 1
}

# make_venv DIR PYTHON_KIND [extra pip requirement...]
make_venv() {
    local dir=$1 kind=$2
    shift 2
    if [ ! -x "$dir/bin/python" ]; then
        "$(find_python "$kind")" -m venv "$dir"
    fi
    # Reinstall only when pyproject.toml changed since the last install.
    local stamp="$dir/.authfw-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$dir/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" "$@"
        touch "$stamp"
    fi
}

make_venv .venv newest
export PATH="$PWD/.venv/bin:$PATH"
