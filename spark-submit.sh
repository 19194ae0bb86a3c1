#!/usr/bin/env bash
# Submit a dmine command to Spark through the spark-submit of the installed pyspark.
#
#   ./spark-submit.sh [--profile NAME] [spark-submit options...] COMMAND [dmine arguments...]
#   ./spark-submit.sh --master 'local[2]' run conf/base/pipelines/banking77.yaml
#   ./spark-submit.sh --master spark://host:7077 --executor-memory 4g run conf/... --set embed.batch_size=32
#   ./spark-submit.sh --profile yarn run conf/...   (the yarn profile: master, archives, conf; `dmine profiles`)
#
# Everything before the first dmine command (run, a stage, score, stream, monitor, sql,
# tables, serve-sql) goes to spark-submit unchanged; the rest goes to dmine.
# The package is zipped and shipped to the executors with --py-files; with a cluster
# master, the models the config names are shipped with --archives (see dmine_spark/spark/ship.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$here/.venv/bin/python" ]]; then py="$here/.venv/bin/python"
else py="$(command -v python3)"; fi

commands=" run ingest clean features embed classify regress finetune cluster score stream monitor sql tables serve-sql "
model_commands=" run embed finetune score stream monitor "
profile_commands=" run ingest clean features embed classify regress finetune cluster score stream monitor sql tables serve-sql "
submit_args=()
profile=""
while [[ $# -gt 0 && "$commands" != *" $1 "* ]]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    *) submit_args+=("$1"); shift ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "spark-submit.sh: no dmine command given (one of:$commands)" >&2
  exit 2
fi

spark_home="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" || {
  echo "spark-submit.sh: pyspark is not installed for $py (run: bash dev.sh setup)" >&2; exit 2; }

build="$here/build/spark-submit"
mkdir -p "$build"
# The zip is named by its content and never rewritten, so runs submitted at the same time from
# this checkout (whose drivers import from it) never see it change under them.
code_zip="$("$py" - "$here" "$build" <<'PY'
import hashlib, os, pathlib, sys, time, zipfile
root, build = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
files = sorted(f for f in (root / "dmine_spark").rglob("*") if f.is_file() and "__pycache__" not in f.parts)
h = hashlib.sha256()
for f in files:
    h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
out = build / f"dmine_spark-{h.hexdigest()[:16]}.zip"
if not out.is_file():
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, f.relative_to(root))
    tmp.replace(out)
for old in build.glob("dmine_spark-*.zip"):  # earlier builds, once no run can still be reading them
    if old != out and time.time() - old.stat().st_mtime > 86400:
        old.unlink(missing_ok=True)
main = build / "dmine_main.py"
text = "from dmine_spark.cli import main\nraise SystemExit(main())\n"
if not main.is_file() or main.read_text() != text:
    main.write_text(text)
print(out)
PY
)"

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

# A profile's spark-submit options and environment (`dmine profiles` lists them); options given here win
if [[ -n "$profile" ]]; then
  pp="PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}"
  conf_dir="${DMINE_CONF_DIR:-$here/conf}"
  out="$(env "$pp" "$py" -m dmine_spark.spark.profiles submit-args "$profile" --conf-dir "$conf_dir" \
    --py-files "$code_zip" --packages "${packages[1]:-}" -- "${submit_args[@]}")" || exit 2
  mapfile -t submit_args <<<"$out"; packages=()
  env_out="$(env "$pp" "$py" -m dmine_spark.spark.profiles submit-env "$profile" --conf-dir "$conf_dir")" || exit 2
  while IFS= read -r kv; do [[ -n "$kv" ]] && export "${kv?}"; done <<<"$env_out"
  # the dmine command builds its session from the same profile, not the pipeline's own
  if [[ " $profile_commands " == *" $1 "* && " $* " != *" --profile "* ]]; then set -- "$@" --profile "$profile"; fi
fi

# The models the pipeline names, zipped once and unpacked on every executor (--archives), when the
# master is a cluster; DMINE_SHIP_MODELS=1 ships them in local mode too, =0 never
master=""
for ((i = 0; i < ${#submit_args[@]}; i++)); do
  if [[ "${submit_args[$i]}" == "--master" ]]; then master="${submit_args[$((i + 1))]:-}"; fi
  if [[ "${submit_args[$i]}" == --master=* ]]; then master="${submit_args[$i]#--master=}"; fi
done
ship="${DMINE_SHIP_MODELS:-}"
if [[ -z "$ship" ]]; then
  if [[ -n "$master" && "$master" != local* ]]; then ship=1; else ship=0; fi
fi
if [[ "$ship" == 1 && " $model_commands " == *" $1 "* && $# -ge 2 ]]; then
  mapfile -t archives < <(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -m dmine_spark.spark.ship "$2" "$build" | sed '/^$/d')
  if [[ ${#archives[@]} -eq 2 ]]; then
    merged=0
    for ((i = 0; i < ${#submit_args[@]}; i++)); do
      if [[ "${submit_args[$i]}" == "--archives" ]]; then
        submit_args[$((i + 1))]="${submit_args[$((i + 1))]},${archives[1]}"; merged=1
      fi
    done
    if [[ $merged == 0 ]]; then submit_args+=("${archives[@]}"); fi
  fi
fi

# Delta Lake from the local jar cache (`dmine jars fetch delta`), unless the config asks for Parquet tables
delta=()
if [[ " ${submit_args[*]:-} " != *"spark.sql.extensions"* ]]; then
  cfg_arg=""
  if [[ " run ingest clean features embed classify regress finetune cluster score stream monitor " == *" $1 "* && $# -ge 2 ]]; then cfg_arg="$2"; fi
  mapfile -t delta < <(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -c 'import sys
from dmine_spark.spark.jars import submit_args
print("\n".join(submit_args(sys.argv[1] or None)))' "$cfg_arg" 2>/dev/null | sed '/^$/d' || true)
fi

# serve-sql: JDBC sessions load Delta's catalog from the JVM class path, not from --jars
if [[ "$1" == "serve-sql" && " ${submit_args[*]:-} " != *" --driver-class-path "* ]]; then
  dcp="$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -c 'from dmine_spark.tools.serve_sql import driver_class_path
print(":".join(driver_class_path()))' 2>/dev/null || true)"
  if [[ -n "$dcp" ]]; then submit_args+=(--driver-class-path "$dcp"); fi
fi

# the JVM options that keep library chatter off the console (netlib's native BLAS probe, say), and the
# driver's class-data archive when `dmine jars archive` recorded one (see docs/configuration.md)
quiet="$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -c 'from dmine_spark.spark.session import quiet_java_options, class_archive_options
print(" ".join(filter(None, [quiet_java_options(), class_archive_options()])))' 2>/dev/null || true)"

export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$py}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$py}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$spark_home/bin/spark-submit" \
  --name "dmine-$1" \
  --py-files "$code_zip" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$here/dmine_spark/spark/log4j2.properties -Dderby.system.home=$work_dir${quiet:+ $quiet}" \
  --conf spark.executorEnv.HF_HUB_OFFLINE=1 \
  "${packages[@]}" "${delta[@]}" "${submit_args[@]}" \
  "$build/dmine_main.py" "$@"
