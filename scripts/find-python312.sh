#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter (pyenv's 3.12.x, or python3.12 on PATH).
set -euo pipefail
for candidate in "${PYTHON312:-}" "$HOME/.pyenv/versions/3.12.1/bin/python3" \
    $(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python3 2>/dev/null) \
    "$(command -v python3.12 2>/dev/null || true)" /usr/bin/python3.12 /usr/local/bin/python3.12; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && \
     "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' 2>/dev/null; then
    echo "$candidate"; exit 0
  fi
done
echo "error: no Python 3.12 found (pyenv 3.12.1 is expected; see .python-version)" >&2
exit 1
