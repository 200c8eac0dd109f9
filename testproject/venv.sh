# Sourced by testproject/bootstrap.sh (the test toolchain) and testproject/demo.sh (the demo
# alone). `make_venv DIR PYTHON_KIND SPEC [extra pip requirement...]` makes a virtual
# environment with a Python >= 3.11 in DIR and installs SPEC (".[test]", ".[redis]", ...) from
# this checkout into it, editable.
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

# make_venv DIR PYTHON_KIND SPEC [extra pip requirement...]
make_venv() {
    local dir=$1 kind=$2 spec=$3
    shift 3
    if [ ! -x "$dir/bin/python" ]; then
        "$(find_python "$kind")" -m venv "$dir"
    fi
    # Reinstall only when pyproject.toml changed since the last install, or when something
    # else is asked for: the stamp holds what was installed.
    local stamp="$dir/.authfw-installed" wanted="$spec $*"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        "$dir/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" "$@"
        echo "$wanted" >"$stamp"
    fi
}
