#!/usr/bin/env bash
# The Python 3.12 leg of `make test` (README, Tests): every test that needs no torch, on the
# newest jax, flax, optax, orbax and grain, with fcn-jax installed the way an offline accelerator
# host installs it (README, Installation). `make test-py312` runs it alone.
#
#   1. Find a Python 3.12: $PY312 if set, else python3.12 on PATH, else pyenv's newest 3.12.x.
#   2. Build the wheelhouse for CPython 3.12 on this machine's architecture (tools/wheelhouse.py,
#      resolving with that Python so that markers are judged for 3.12): the newest releases.
#   3. The venv (.venv-py312) is reused while the wheelhouse's MANIFEST.txt, pyproject.toml and the
#      interpreter are those it was built from; otherwise it is built anew:
#        a. jax, the release the wheelhouse left out (the newest), from the index: the "cluster's";
#        b. fcn-jax from the wheelhouse alone (pip sees no index, no configured find-links, and no
#           network where `unshare` can take it away), which must leave jax and jaxlib as they were;
#        c. the `test` extra of pyproject.toml from the index (no torch; ruff lints in .venv), which
#           must not change anything installed in a or b.
#      Either way the project's own wheel is reinstalled, so the installed copy is this checkout's.
#   4. pytest -m "not torch" $PYTEST_ARGS (default -n 2), as the main suite runs.
#
# Usage: tools/test_py312.sh WHEELHOUSE_PYTHON VENV WHEELHOUSE
#   WHEELHOUSE_PYTHON runs tools/wheelhouse.py (any Python >= 3.11 with pip >= 23: .venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELHOUSE_PYTHON=$1 VENV=$2 WHEELHOUSE=$3
PYTEST_ARGS=${PYTEST_ARGS:--n 2}
STAMP=$VENV/fcn-jax-leg.stamp

say() { printf '[py312 leg] %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 2; }

# A Python 3.12 that runs: pyenv's shims answer `command -v python3.12` even where no 3.12 is
# selected, so each candidate is asked its version rather than trusted by name.
find_python312() {
    local candidates=() p
    if [ -n "${PY312:-}" ]; then
        candidates=("$PY312")
    else
        candidates=(python3.12)
        if command -v pyenv >/dev/null 2>&1; then
            while IFS= read -r p; do candidates+=("$p"); done < <(
                printf '%s\n' "$(pyenv root)"/versions/3.12*/bin/python3.12 | sort -rV)
        fi
    fi
    for p in "${candidates[@]}"; do
        if "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12); print(sys.executable)' \
            2>/dev/null; then
            return 0
        fi
    done
    return 1
}

if ! PY312_EXE=$(find_python312); then
    tried=${PY312:-"python3.12 on PATH, pyenv versions/3.12*"}
    cat >&2 <<EOF
error: the Python 3.12 test leg needs a Python 3.12 and found none (tried: $tried).
Get one, then run make test again:
  pyenv install 3.12                                  (pyenv)
  apt install python3.12 python3.12-venv              (Debian/Ubuntu; the deadsnakes PPA on older Ubuntu)
  the installer from python.org                       (macOS, Windows)
or name one: make test PY312=/path/to/python3.12
To run only the main suite: make test-main
EOF
    exit 2
fi
say "Python: $PY312_EXE"

arch=$(uname -m)
"$WHEELHOUSE_PYTHON" tools/wheelhouse.py --python-version 3.12 \
    --platform "manylinux_2_28_$arch" --out "$WHEELHOUSE" --interpreter "$PY312_EXE"
manifest=$WHEELHOUSE/MANIFEST.txt
jax_version=$(awk '$1 == "left-out" && $2 == "jax" {print $3}' "$manifest")
[ -n "$jax_version" ] || fail "$manifest names no jax it left out; rebuild it (make clean)"
project_wheel=$(awk '$1 == "wheel" && $2 == "fcn-jax" {print $4}' "$manifest")

want_stamp=$(
    cat "$manifest"
    sha256sum pyproject.toml
    echo "python $PY312_EXE $("$PY312_EXE" -VV | tr '\n' ' ')"
)

VPY=$VENV/bin/python
# pip as an air-gapped host has it: no index, no find-links or constraints from pip's
# configuration or PIP_* variables (this machine may set some), no network where unshare works.
offline_pip() (
    for name in $(compgen -e | grep '^PIP_' || true); do unset "$name"; done
    export PIP_CONFIG_FILE=/dev/null
    isolate=()
    if unshare -n true 2>/dev/null; then isolate=(unshare -n)
    elif unshare -rn true 2>/dev/null; then isolate=(unshare -rn); fi
    "${isolate[@]}" "$VPY" -m pip --disable-pip-version-check install --no-index \
        --find-links "$WHEELHOUSE" "$@"
)
versions() { "$VPY" -c 'import importlib.metadata as m; print(m.version("jax"), m.version("jaxlib"))'; }

if [ -x "$VPY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
    say "reusing $VENV (wheelhouse, pyproject.toml and Python unchanged)"
else
    say "building $VENV: jax $jax_version, then fcn-jax from $WHEELHOUSE offline, then the test extra"
    rm -rf "$VENV"
    "$PY312_EXE" -m venv "$VENV"
    "$VPY" -m pip install --quiet --upgrade pip
    "$VPY" -m pip install --quiet "jax==$jax_version"
    before=$(versions)
    offline_pip --quiet fcn-jax
    after=$(versions)
    [ "$before" = "$after" ] || fail "installing fcn-jax from $WHEELHOUSE changed jax, jaxlib from" \
        "'$before' to '$after': the wheelhouse must never replace the cluster's jax"
    if "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'
    then fail "torch is installed in $VENV: this leg runs without it"; fi
    installed=$("$VPY" -m pip freeze --exclude-editable)
    "$VPY" -c '
import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
print("\n".join(r for r in extra if not r.startswith(("ruff", "torch"))))' >"$VENV/test-extra.txt"
    "$VPY" -m pip install --quiet -r "$VENV/test-extra.txt"
    changed=$(comm -23 <(echo "$installed" | sort) <("$VPY" -m pip freeze --exclude-editable | sort))
    [ -z "$changed" ] || fail "installing the test extra changed what fcn-jax's install put in" \
        "$VENV (so the tests would not run on the wheelhouse's versions): $changed"
    echo "$want_stamp" >"$STAMP"
fi
# The project's wheel is rebuilt on every run: install this checkout's, whatever the venv held.
offline_pip --quiet --no-deps --force-reinstall "$WHEELHOUSE/$project_wheel"
say "jax, jaxlib $(versions); flax $("$VPY" -c 'import flax; print(flax.__version__)')"

say "pytest -m 'not torch' $PYTEST_ARGS"
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of flags, split as make splits it
exec "$VPY" -m pytest -m "not torch" $PYTEST_ARGS
