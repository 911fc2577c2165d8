#!/usr/bin/env bash
# The install path a deployment takes: build the wheel, install it into a fresh venv,
# and run `orderbot migrate` from a directory outside the checkout against a new
# database (schema.sql must come with the package). The database is dropped after.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
db="orderbot_wheel_$$"
base=${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/orderbot}
url="${base%/*}/$db"
cleanup() {
  .venv/bin/python - "$url" <<'PY' || true
import asyncio, sys
import asyncpg
async def drop(url: str) -> None:
    admin = await asyncpg.connect(url, database="postgres")
    name = url.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()
asyncio.run(drop(sys.argv[1]))
PY
  rm -rf "$work"
}
trap cleanup EXIT

.venv/bin/python -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/orderbot-*.whl
(cd "$work" && env -u PYTHONPATH DATABASE_URL="$url" "$work/venv/bin/orderbot" migrate)
# The console's templates and assets are package data: a wheel without them serves errors.
(cd "$work" && env -u PYTHONPATH "$work/venv/bin/python" -c "
from importlib.resources import files
for name in ('templates/console/board.html', 'static/console/console.js'):
    assert (files('server') / name).is_file(), f'{name} is not in the wheel'
")
# The web chat's page and assets are data files: the package must carry them too.
(cd "$work" && env -u PYTHONPATH "$work/venv/bin/python" -c '
import server.webchat as chat
missing = [n for n in chat.ASSETS if not (chat.STATIC / n).is_file()]
assert chat.TEMPLATE.is_file() and not missing, ("web chat files missing", missing)
')
echo "wheel: installed into a fresh venv and migrated $db from $work"
