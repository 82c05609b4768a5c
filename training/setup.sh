#!/usr/bin/env bash
# Install everything training/ needs on a fresh Debian machine; idempotent and fast when done.
#   - apt: dataset-fashion-mnist (-> /usr/share/datasets/fashion-mnist), nodejs/npm, python3-venv
#   - npm: emoji-datasource-google and -twitter 16.0.0 into training/data/node_modules (gitignored)
#   - venv: ${STEPWISE_VENV:-/root/.cache/stepwise/venv} with training/requirements.txt
set -euo pipefail
cd "$(dirname "$0")"
VENV="${STEPWISE_VENV:-/root/.cache/stepwise/venv}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v npm >/dev/null || need_apt+=(npm)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

EMOJI_VERSION=16.0.0
have() { grep -q "\"version\": \"$EMOJI_VERSION\"" "data/node_modules/emoji-datasource-$1/package.json" 2>/dev/null; }
if ! have google || ! have twitter; then
  mkdir -p data
  npm install --silent --no-audit --no-fund --prefix data \
    "emoji-datasource-google@$EMOJI_VERSION" "emoji-datasource-twitter@$EMOJI_VERSION"
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# pip is slow even when nothing changes; skip it when the installed set already matches.
stamp="$VENV/.stepwise-requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! "$VENV/bin/python" - <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, ver = line.split("==")
    try:
        ok &= version(name) == ver
    except PackageNotFoundError:
        ok = False
sys.exit(0 if ok else 1)
PY
  then
    "$VENV/bin/pip" install -q -r requirements.txt
  fi
  echo "$want" > "$stamp"
fi
echo "training setup OK: venv $VENV, emoji $EMOJI_VERSION, fashion-mnist in /usr/share/datasets"
