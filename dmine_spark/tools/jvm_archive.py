"""``dmine jars archive``: record the driver JVM's class-data archive with a small pipeline run.

The archive (:mod:`dmine_spark.spark.classcache`) holds the classes one
driver JVM loaded. To hold the ones every ``dmine`` command needs, it is
recorded from a real run in a child process: a two-split CSV of 48 short
texts through ``ingest``, ``clean`` (with PII masking and near-duplicates),
``embed`` and ``classify``, into Delta tables of a throw-away catalog, with
the run's own read-backs of its tables. It is written to a temporary name and renamed, so a
reader never maps half a file.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dmine_spark.spark.classcache import archive_path

__all__ = ["record_archive"]

_INTENTS = {
    "card_arrival": ["my card has not arrived yet", "when will my new card come", "the card is still not here"],
    "top_up": ["how do I top up my account", "top up with a bank transfer", "my top up failed"],
    "exchange_rate": ["what exchange rate do you use", "the exchange rate looks wrong", "rate for euro to dollar"],
    "lost_card": ["I lost my card", "my card was stolen yesterday", "someone took my card, block it"],
}

_CONFIG = """\
name: jvm_archive
task: jvm_archive
profile: local
database: dmine_archive
text_col: text
label_col: label
sources:
  train: {{path: "{train}", format: csv, schema: "text STRING, label STRING", options: {{header: true}}}}
  test: {{path: "{test}", format: csv, schema: "text STRING, label STRING", options: {{header: true}}}}
pii: {{enabled: true}}
near_dup: {{enabled: true}}
classify: {{train_split: train, eval_split: test, model: sk_logreg}}
tracking: {{enabled: false}}
report: {{enabled: false}}
"""


def _write_inputs(folder: Path) -> Path:
    for split, repeat in (("train", 3), ("test", 1)):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for label, texts in _INTENTS.items():
                for i in range(repeat):
                    for t in texts:
                        w.writerow([f"{t} (case {i}, mail a{i}@example.com)" if split == "train" else t, label])
    cfg = folder / "pipeline.yaml"
    cfg.write_text(_CONFIG.format(train=folder / "train.csv", test=folder / "test.csv"), encoding="utf-8")
    return cfg


def record_archive(*, force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Record the class-data archive for this Java and Spark install, unless it exists (``force``: again).

    Takes about a minute on 2 cores (a JVM start, a small pipeline run and the
    archive dump at exit).

    Returns
    -------
    Path
        The archive (``<jar cache>/jvm/driver-<digest>.jsa``, about 250 MB).

    Raises
    ------
    RuntimeError
        Without Java on ``PATH``, or when the recording run fails (its last lines are in the message).
    """
    dest = archive_path()
    if dest is None:
        raise RuntimeError("no java on PATH (or in $JAVA_HOME); Spark needs Java 17 or 21")
    if dest.is_file() and not force:
        echo(f"dmine jars archive: {dest} is there already")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dmine-jvm-archive-") as tmp:
        folder = Path(tmp)
        cfg = _write_inputs(folder)
        partial = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        env = dict(os.environ, DMINE_JVM_ARCHIVE_RECORD=str(partial), DMINE_WORK_DIR=str(folder / "work"))
        cmd = [sys.executable, "-m", "dmine_spark.cli", "run", str(cfg), "-q", "--work-dir", str(folder / "work")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=folder)
        if proc.returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"recording the JVM class-data archive failed:\n{tail}")
        shutil.move(partial, dest)
    echo(f"dmine jars archive: {dest} ({dest.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.0f}s")
    return dest
