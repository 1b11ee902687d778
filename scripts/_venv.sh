# Shared by scripts/test and scripts/demo: make sure ./.venv exists with ResIP installed.
# Debian's system Python refuses `pip install` outside a venv (PEP 668), so we always
# use our own; python3-venv comes from apt when it is missing and we are root.
# Usage: . scripts/_venv.sh EXTRAS   (EXTRAS e.g. "test" or "")
set -euo pipefail
resip_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
resip_venv="$resip_root/.venv"
resip_extras="${1:-}"

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "ResIP needs Python >= 3.11 (found $(python3 --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$resip_venv/bin/python" ]; then
    if ! python3 -m venv "$resip_venv" 2>/dev/null; then
        rm -rf "$resip_venv"
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            python3 -m venv "$resip_venv"
        else
            echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
target="$resip_root"
[ -n "$resip_extras" ] && target="$resip_root[$resip_extras]"
"$resip_venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
"$resip_venv/bin/python" -m pip install -q --disable-pip-version-check -e "$target"
export PATH="$resip_venv/bin:$PATH"
