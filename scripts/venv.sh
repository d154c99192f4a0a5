# Sourced by scripts/demo and scripts/test: picks the Python veloxy is installed into and
# installs it there (once per change of pyproject.toml/setup.py), so that both commands work
# with a distribution's Python, which refuses `pip install` outside a virtualenv (PEP 668:
# Debian 12+, Ubuntu 23.04+, Fedora, Homebrew).
#
# Which Python, first match wins:
#   1. PYTHON=... that is itself a virtualenv's Python: used as it is;
#   2. an active virtualenv (VIRTUAL_ENV), when PYTHON is not set: its Python;
#   3. otherwise the project virtualenv .venv (VELOXY_VENV=DIR to put it elsewhere), created
#      with PYTHON (default python3) when missing, reused when present.
# After the call, $PY is the chosen Python (veloxy's command is beside it: .venv/bin/veloxy).
#
# Usage: veloxy_install EXTRAS   (EXTRAS: "" or "[test]")

veloxy_die() {
    printf 'veloxy: %s\n' "$@" >&2
    exit 1
}

# True when "$1" runs inside a virtualenv (its prefix is not the base installation's).
veloxy_is_venv_python() {
    "$1" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null
}

veloxy_venv_python_path() {
    if [ -x "$1/bin/python" ]; then
        printf '%s\n' "$1/bin/python"
    else
        printf '%s\n' "$1/Scripts/python.exe"  # a venv made by a Windows Python (Git Bash)
    fi
}

# Says what to install when the base Python cannot make a virtualenv with pip in it: Debian
# and Ubuntu ship `venv` and `ensurepip` in a separate package (python3-venv).
veloxy_check_venv_module() {
    local base=$1 version
    if ! version=$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
        veloxy_die "cannot run '$base'. Install Python 3.11 or newer, or point PYTHON at one:" \
            "  PYTHON=/path/to/python3 bash $0"
    fi
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        veloxy_die "veloxy needs Python 3.11 or newer; '$base' is $version." \
            "  Point PYTHON at a newer one: PYTHON=/path/to/python3.11 bash $0"
    fi
    local missing=""
    "$base" -c 'import venv' 2>/dev/null || missing="venv"
    "$base" -c 'import ensurepip' 2>/dev/null || missing="${missing:+$missing and }ensurepip"
    if [ -n "$missing" ]; then
        veloxy_die "'$base' (Python $version) lacks the $missing module, which makes the project" \
            "virtualenv (.venv). Install it, then run this command again:" \
            "  Debian, Ubuntu:  sudo apt install python3-venv   (or python$version-venv)" \
            "  Fedora, RHEL:    sudo dnf install python3        (venv is part of it)" \
            "  Alpine:          apk add python3                 (venv is part of it)" \
            "Or use a virtualenv of your own: activate it first (VIRTUAL_ENV is honoured)."
    fi
}

veloxy_pick_python() {
    if [ -n "${PYTHON:-}" ] && veloxy_is_venv_python "$PYTHON"; then
        PY=$PYTHON
        return
    fi
    if [ -z "${PYTHON:-}" ] && [ -n "${VIRTUAL_ENV:-}" ]; then
        PY=$(veloxy_venv_python_path "$VIRTUAL_ENV")
        [ -x "$PY" ] || veloxy_die "VIRTUAL_ENV=$VIRTUAL_ENV has no Python ($PY); deactivate it" \
            "or recreate it."
        return
    fi
    local base=${PYTHON:-python3} venv=${VELOXY_VENV:-.venv}
    command -v "$base" >/dev/null 2>&1 || [ -x "$base" ] || base=python  # Windows has no python3
    PY=$(veloxy_venv_python_path "$venv")
    if [ -x "$PY" ] && "$PY" -m pip --version >/dev/null 2>&1; then
        # Reused, unless PYTHON asks for another interpreter than the one .venv was made from.
        if [ -n "${PYTHON:-}" ]; then
            local want have
            want=$("$base" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])' 2>/dev/null) || want=""
            have=$("$PY" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])')
            if [ -n "$want" ] && [ "$want" != "$have" ]; then
                echo "veloxy: $venv was made from another Python ($have); remaking it with $base" >&2
                veloxy_check_venv_module "$base"
                "$base" -m venv --clear "$venv"
            fi
        fi
        return
    fi
    veloxy_check_venv_module "$base"
    echo "veloxy: creating the project virtualenv $venv with $base" >&2
    # --clear: a half-made .venv (say, from a Python without ensurepip) is made again.
    "$base" -m venv --clear "$venv" || veloxy_die "'$base -m venv $venv' failed (above)."
    PY=$(veloxy_venv_python_path "$venv")
}

veloxy_install() {
    local extras=$1
    veloxy_pick_python
    # Installed once per change of the packaging files: the stamp sits in the venv itself.
    local prefix stamp digest
    prefix=$("$PY" -c 'import sys; print(sys.prefix)')
    stamp="$prefix/.veloxy-installed${extras:+-test}"
    digest=$(cat pyproject.toml setup.py | cksum)
    digest="$digest $(pwd)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] \
        && "$PY" -c 'import veloxy' 2>/dev/null; then
        return
    fi
    "$PY" -m pip install --quiet --disable-pip-version-check -e ".$extras"
    printf '%s\n' "$digest" > "$stamp" 2>/dev/null || true
}
