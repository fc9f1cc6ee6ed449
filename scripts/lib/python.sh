# pick_python: the interpreter scripts/install.sh creates .venv with: $PYTHON when set, else the
# first of python3.11 (preferred: the version the project is tested most on), python3.12,
# python3.13 and python3 found on PATH (pyproject's requires-python: 3.11 to 3.13).
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null; then echo "$candidate"; return; fi
  done
  echo "python3"
}
