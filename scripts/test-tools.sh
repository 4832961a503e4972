#!/usr/bin/env bash
# Installs the tools the test suite runs that the `dev` extra cannot bring; `make test`
# runs it first. Idempotent, and quick when everything is there. Two kinds of tool:
#   - Debian packages, installed with apt-get when their command is missing (CI and the
#     developers' machines run as root);
#   - Python tools whose pinned dependencies clash with the project's, each installed in
#     the git-ignored .venv-tools/ virtualenv, apart from .venv/.
# A new tool is one more line in the list of its kind.
set -euo pipefail
cd "$(dirname "$0")/.."

# "command debian-package": the package is installed when the command is not on PATH.
DEBIAN_TOOLS=(
    "promtool prometheus"  # tests/observability: promtool and a real Prometheus server
    # tests/dashboard: the browser Playwright drives (never a browser download of its own)
    "chromium chromium"
)

# "command pip-requirement": installed in .venv-tools/ when missing or pinned otherwise.
PYTHON_TOOLS=(
    # The chart tests' static check (tests/deploy). checkov pins boto3==1.35.49 and
    # packaging<24, which the project's own venv must not be held to.
    "checkov checkov==3.3.30"
)

missing=()
for entry in "${DEBIAN_TOOLS[@]}"; do
    read -r cmd pkg <<<"$entry"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test-tools: missing Debian packages: ${missing[*]} (run this script as root)" >&2
        exit 1
    fi
    echo "test-tools: installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

TOOLS_VENV=.venv-tools
for entry in "${PYTHON_TOOLS[@]}"; do
    read -r cmd req <<<"$entry"
    stamp="$TOOLS_VENV/.$cmd.installed"
    if [[ -x $TOOLS_VENV/bin/$cmd && -f $stamp && $(cat "$stamp") == "$req" ]]; then
        continue
    fi
    echo "test-tools: installing $req in $TOOLS_VENV/"
    [[ -x $TOOLS_VENV/bin/python ]] || "${PYTHON:-python3}" -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/python" -m pip install -q "$req"
    echo "$req" >"$stamp"
done
