#!/usr/bin/env bash
# Submit a dmine command to Spark through the spark-submit of the installed pyspark.
#
#   ./spark-submit.sh [spark-submit options...] COMMAND [dmine arguments...]
#   ./spark-submit.sh --master 'local[2]' run conf/base/pipelines/banking77.yaml
#   ./spark-submit.sh --master spark://host:7077 --executor-memory 4g run conf/... --set embed.batch_size=32
#
# Everything before the first dmine command (run, ingest, clean, embed, classify,
# cluster, sql, tables) goes to spark-submit unchanged; the rest goes to dmine.
# The package is zipped and shipped to the executors with --py-files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$here/.venv/bin/python" ]]; then py="$here/.venv/bin/python"
else py="$(command -v python3)"; fi

commands=" run ingest clean embed classify cluster sql tables "
submit_args=()
while [[ $# -gt 0 && "$commands" != *" $1 "* ]]; do
  submit_args+=("$1"); shift
done
if [[ $# -eq 0 ]]; then
  echo "spark-submit.sh: no dmine command given (one of:$commands)" >&2
  exit 2
fi

spark_home="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" || {
  echo "spark-submit.sh: pyspark is not installed for $py (run: bash dev.sh setup)" >&2; exit 2; }

build="$here/build/spark-submit"
mkdir -p "$build"
"$py" - "$here" "$build" <<'PY'
import pathlib, sys, zipfile
root, build = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(build / "dmine_spark.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted((root / "dmine_spark").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            z.write(f, f.relative_to(root))
(build / "dmine_main.py").write_text(
    "from dmine_spark.cli import main\nraise SystemExit(main())\n"
)
PY

work_dir="${DMINE_WORK_DIR:-$PWD/dmine_work}"
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--work-dir" ]]; then j=$((i + 1)); work_dir="${!j}"; fi
done
mkdir -p "$work_dir"
work_dir="$(cd "$work_dir" && pwd)"

# Maven packages the pipeline's sources need (a JDBC driver, say), unless given with --packages
packages=()
if [[ " ${submit_args[*]:-} " != *" --packages "* && " run ingest " == *" $1 "* && $# -ge 2 ]]; then
  pkgs="$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -c 'import sys
from dmine_spark.config import load_config
print(",".join(load_config(sys.argv[1], check_paths=False).spark_packages()))' "$2" 2>/dev/null || true)"
  if [[ -n "$pkgs" ]]; then packages=(--packages "$pkgs"); fi
fi

# Delta Lake from the local jar cache (`dmine jars fetch delta`), unless the config asks for Parquet tables
delta=()
if [[ " ${submit_args[*]:-} " != *"spark.sql.extensions"* ]]; then
  cfg_arg=""
  if [[ " run ingest clean embed classify cluster " == *" $1 "* && $# -ge 2 ]]; then cfg_arg="$2"; fi
  mapfile -t delta < <(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -c 'import sys
from dmine_spark.spark.jars import submit_args
print("\n".join(submit_args(sys.argv[1] or None)))' "$cfg_arg" 2>/dev/null | sed '/^$/d' || true)
fi

export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$py}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$py}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$spark_home/bin/spark-submit" \
  --name "dmine-$1" \
  --py-files "$build/dmine_spark.zip" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$here/dmine_spark/spark/log4j2.properties -Dderby.system.home=$work_dir" \
  --conf spark.executorEnv.HF_HUB_OFFLINE=1 \
  "${packages[@]}" "${delta[@]}" "${submit_args[@]}" \
  "$build/dmine_main.py" "$@"
