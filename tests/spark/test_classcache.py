"""The class-data archive that set-up recorded fits the driver JVM that dmine starts.

``-Xshare:on`` makes the JVM refuse to start when the archive does not match
its Java build or class path, where dmine's own options (``-Xshare:auto``)
would silently start without it: so a started session proves the archive is
used.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from dmine_spark.spark.classcache import archive_path
from tests.conftest import REPO

CHECK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dmine_spark.config import load_profile
    from dmine_spark.spark.session import build_session
    prof = load_profile("local")
    prof.conf["spark.driver.extraJavaOptions"] = "-Xshare:on"
    spark = build_session(prof, Path(sys.argv[1]), table_format="parquet")
    args = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    print("ARCHIVE", [a for a in args if a.startswith("-XX:SharedArchiveFile=")])
    print("ROWS", spark.range(5).count())
    """
)


def test_the_recorded_archive_is_mapped_by_a_driver(tmp_path: Path) -> None:
    path = archive_path()
    assert path is not None and path.is_file(), "no class-data archive: `dmine jars archive` (dev.sh setup) records it"
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"ARCHIVE ['-XX:SharedArchiveFile={path}']" in proc.stdout
    assert "ROWS 5" in proc.stdout
    # the JVM's messages about the archive are switched off
    assert "cds" not in proc.stderr.lower()
