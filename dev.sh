#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash dev.sh demo    set up, then run the BANKING77 demo pipeline on the bundled sample
#   bash dev.sh test    set up, then lint (ruff, the import contract) and run the test suite
#   bash dev.sh setup   only create the virtual environment and install dmine_spark with its dev extras
# Each takes --spark 3.5 first to use the Spark 3.5 line (Scala 2.12, Delta 3.3, Spark NLP) in
# .venv-spark3.5 instead of the 4.x line in .venv; both can live side by side.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PY="${PYTHON_BIN:-python3}"
VENV=.venv
EXTRAS="dev,notebooks"
JARS="delta kafka"
cmd="${1:-}"
shift || true
if [[ "${1:-}" == "--spark" ]]; then
  case "${2:-}" in
    3.5)
      VENV=.venv-spark3.5; EXTRAS="dev,notebooks,spark35"; JARS="delta kafka sparknlp"
      # its own catalog: tables and the metastore are kept apart from the 4.x line's
      export DMINE_WORK_DIR="${DMINE_WORK_DIR:-dmine_work_spark3.5}" ;;
    4|4.x) ;;
    *) echo "dev.sh: --spark takes 3.5 or 4.x, got '${2:-}'" >&2; exit 2 ;;
  esac
  shift 2
fi

need_java() {
  if command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -qE 'version "(17|21)'; then
    return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "dev.sh: installing a Java 17 runtime for Spark" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "dev.sh: Spark 4.2 needs Java 17 or 21 on PATH; install it (e.g. apt-get install openjdk-17-jre-headless)" >&2
    exit 2
  fi
}

setup() {
  need_java
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
  fi
  # reinstall only when the declared dependencies changed
  local stamp="$VENV/.dmine-setup" want
  want="$(sha256sum setup.py | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
    echo "$want" >"$stamp"
  fi
  # the JVM packages of this Spark line from Maven Central into .jars/, once; sessions then load them
  # with no network (Spark NLP as a pinned, checksummed jar list)
  # shellcheck disable=SC2086
  "$VENV/bin/dmine" jars fetch $JARS >/dev/null ||
    echo "dev.sh: could not fetch the jars of '$JARS' (see above); result tables will be Parquet" >&2
  # the driver JVM's class-data archive, recorded once by a small pipeline run: every dmine command then
  # starts its JVM seconds sooner
  "$VENV/bin/dmine" jars archive >/dev/null ||
    echo "dev.sh: could not record the JVM class-data archive (see above); dmine works, only starts slower" >&2
}

case "$cmd" in
  setup)
    setup ;;
  demo)
    setup
    exec "$VENV/bin/dmine" run conf/base/pipelines/banking77.yaml "$@" ;;
  test)
    setup
    "$VENV/bin/ruff" check dmine_spark tests setup.py
    "$VENV/bin/lint-imports" --no-cache >/dev/null || "$VENV/bin/lint-imports" --no-cache
    # two worker processes (DMINE_TEST_WORKERS=1: one); a test module, with its fixtures, stays in one worker
    # (tests/conftest.py: pytest_xdist_make_scheduler)
    workers=()
    if [[ "${DMINE_TEST_WORKERS:-2}" -gt 1 ]]; then
      workers=(-n "${DMINE_TEST_WORKERS:-2}")
    fi
    exec "$VENV/bin/python" -m pytest -m "${DMINE_TEST_MARKERS:-not gpu and not install}" "${workers[@]}" "$@" ;;
  *)
    echo "usage: bash dev.sh {demo|test|setup} [--spark 3.5|4.x] [args...]" >&2
    exit 2 ;;
esac
