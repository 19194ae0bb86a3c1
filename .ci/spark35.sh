#!/usr/bin/env bash
# CI's Spark 3.5 lane, after the 4.x lane (the README's test command): the same checkout on pyspark 3.5,
# Scala 2.12, Delta Lake 3.3 and Spark NLP 5.5.3, in .venv-spark3.5 beside .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
t0=$SECONDS
# unit tests, Spark NLP, cleaning and Delta Lake on 3.5, and installing into runtimes that have pyspark
DMINE_TEST_MARKERS="not gpu" bash dev.sh test --spark 3.5 -p no:cacheprovider \
  tests/unit tests/spark/test_sparknlp.py tests/spark/test_clean.py tests/integration/test_delta.py \
  tests/integration/test_install.py

# the demo pipeline end to end on 3.5, and its classifier on both lines: test accuracy within 0.002
w="$(mktemp -d)"
DMINE_WORK_DIR="$w/4x" .venv/bin/dmine run conf/base/pipelines/banking77.yaml --stages ingest,clean,embed,classify \
  | tee "$w/4x.log"
DMINE_WORK_DIR="$w/35" bash dev.sh demo --spark 3.5 | tee "$w/35.log"
acc() { grep -oE "test accuracy [0-9.]+" "$1" | head -1 | awk '{print $3}'; }
a4="$(acc "$w/4x.log")" a35="$(acc "$w/35.log")"
python3 -c "import sys; a4, a35 = float(sys.argv[1]), float(sys.argv[2]); \
print(f'ci: demo test accuracy 4.x {a4:.4f}, 3.5 {a35:.4f}, difference {abs(a4 - a35):.4f} (at most 0.002)'); \
sys.exit(abs(a4 - a35) > 0.002)" "$a4" "$a35"

# both Spark NLP backends in the demo pipeline, offline, on a tenth of the sample
DMINE_WORK_DIR="$w/snlp" bash dev.sh demo --spark 3.5 --stages ingest,clean,embed,classify \
  --set clean.backend=sparknlp --set embed.backend=sparknlp \
  --set sources.train.sample=0.1 --set sources.test.sample=0.1 | tee "$w/snlp.log"
grep -q "test accuracy" "$w/snlp.log"
rm -rf "$w"
echo "ci: Spark 3.5 lane passed in $((SECONDS - t0)) s"
