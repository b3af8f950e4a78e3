# Sourced by scripts/run-gateway and scripts/test: builds a virtualenv that is either complete or
# rebuilt from scratch. A venv counts as ready only once `.astrocyte-setup-complete` holds the
# stamp of what it was built from (written last), so a set-up killed at any step (venv creation,
# any package's install) or a venv from older requirements is deleted and built again on the next
# run. pip is never upgraded in place (a half-replaced pip is what broke venvs for good before):
# the installs use uv when there is one, else the pip the venv was created with.

_venv_say() { printf '%s: %s\n' "${VENV_LABEL:-setup}" "$*" >&2; }

# Prints a stamp for everything given: file contents and plain strings, plus the python3 in use.
venv_stamp() {
  { python3 -c 'import sys; print(sys.version)'; for item in "$@"; do
      if [ -f "$item" ]; then cat "$item"; else printf '%s\n' "$item"; fi
    done; } | python3 -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

# ensure_venv DIR STAMP WHAT INSTALL_ARGS...: make DIR a venv with INSTALL_ARGS installed, unless it
# already is one built from STAMP. WHAT says in words what is being installed.
ensure_venv() {
  local dir=$1 stamp=$2 what=$3
  shift 3
  local ready="$dir/.astrocyte-setup-complete"
  if [ -f "$ready" ] && [ "$(cat "$ready")" = "$stamp" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$dir")"
  if command -v flock >/dev/null 2>&1; then
    # Two first runs at once: the second waits, then finds the venv ready.
    exec 9>"$dir.lock"
    flock 9
    if [ -f "$ready" ] && [ "$(cat "$ready")" = "$stamp" ]; then
      exec 9>&-
      return 0
    fi
  fi
  local started=$SECONDS log="$dir.setup.log"
  if [ -e "$dir" ]; then
    _venv_say "$dir is incomplete or out of date (an interrupted set-up, or new requirements); rebuilding it"
    rm -rf "$dir"
  fi
  local uv
  uv=$(_venv_find_uv)
  _venv_say "first run: creating $dir and installing $what (a minute or so; log: $log)"
  if ! _venv_build "$dir" "$uv" "$@" >"$log" 2>&1; then
    _venv_say "set-up failed; the end of $log:"
    tail -n 20 "$log" >&2
    return 1
  fi
  printf '%s\n' "$stamp" >"$ready.tmp"
  mv "$ready.tmp" "$ready"
  _venv_say "ready after $((SECONDS - started)) s"
  if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
}

_venv_find_uv() {
  if [ -n "${VENV_UV:-}" ] && [ -x "$VENV_UV" ]; then
    printf '%s\n' "$VENV_UV"
  elif command -v uv >/dev/null 2>&1; then
    command -v uv
  fi
}

_venv_build() {
  local dir=$1 uv=$2
  shift 2
  if [ -n "$uv" ]; then
    "$uv" venv --seed --python "$(command -v python3)" "$dir"
    "$uv" pip install --python "$dir/bin/python" "$@"
  else
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@"
  fi
}
