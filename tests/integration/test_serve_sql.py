"""serve-sql end to end: a catalog made by one process, served by another, read over JDBC by beeline and PyHive."""

from __future__ import annotations

import ipaddress
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

SERVE = [sys.executable, "-m", "dmine_spark.tools.serve_sql"]  # `dmine serve-sql` runs the same main()
ROWS = [("r1", "banking77", 100, 0.91), ("r2", "banking77", 250, 0.93), ("r3", "tickets", 42, 0.77)]

_MAKE_CATALOG = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dmine_spark.io.tables import ensure_database, set_table_format, write_table
    from dmine_spark.config import load_profile
    from dmine_spark.spark.session import build_session

    spark = build_session(load_profile("local", sys.argv[2]), Path(sys.argv[1]), app_name="dmine-test-catalog")
    ensure_database(spark, "dmine")
    print("format", set_table_format(spark, "auto"))
    rows = eval(sys.argv[3])
    df = spark.createDataFrame(rows, "run_id string, pipeline string, rows_in long, accuracy double")
    write_table(df, "dmine.runs")
    spark.stop()
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON", sys.executable)
    env["DMINE_CONF_DIR"] = str(REPO / "conf")
    for var in ("HIVE_SERVER2_THRIFT_BIND_HOST", "HIVE_SERVER2_THRIFT_PORT"):
        env.pop(var, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the sockets listening on ``port``, from /proc/net/tcp{,6}."""
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            addr, hex_port = cols[1].split(":")
            if int(hex_port, 16) != port or cols[3] != "0A":  # 0A: LISTEN
                continue
            # each 32-bit word of the address is in host (little-endian) order
            raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, len(addr), 8))
            out.append(ipaddress.ip_address(raw))
    return out


def _loopback(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    ready: str
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    stderr: Path | None = None

    def output(self) -> str:
        got = []
        while not self.lines.empty():
            got.append(self.lines.get_nowait())
        return "".join(got)

    def stderr_tail(self) -> str:
        return self.stderr.read_text()[-3000:] if self.stderr and self.stderr.exists() else ""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work dir whose catalog has dmine.runs with ROWS, written (Delta if cached, else Parquet) by another process."""
    work = tmp_path_factory.mktemp("serve_work")
    proc = subprocess.run(
        [sys.executable, "-c", _MAKE_CATALOG, str(work), str(REPO / "conf"), repr(ROWS)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"making the catalog failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (work / "metastore_db").is_dir()
    return work


@pytest.fixture(scope="module")
def server(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    err = tmp_path_factory.mktemp("serve_log") / "stderr.txt"
    with open(err, "w") as err_fh:
        proc = subprocess.Popen(
            [*SERVE, "--work-dir", str(catalog), "--port", str(port)],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=err_fh,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        ready = ""
        while not ready:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve-sql did not get ready (rc {proc.poll()}):\n{err.read_text()[-3000:]}")
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith("dmine serve-sql: jdbc:"):
                ready = line
        yield Server(proc, port, ready, lines, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_ready_line_names_url_auth_and_the_held_catalog(server: Server, catalog: Path) -> None:
    assert server.ready == (
        f"dmine serve-sql: jdbc:hive2://127.0.0.1:{server.port}/dmine (auth NONE); "
        f"holds the catalog in {catalog.resolve()}; Ctrl-C stops\n"
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp")
def test_listens_on_loopback_only(server: Server) -> None:
    addrs = _listening(server.port)
    assert addrs, f"nothing listens on port {server.port}"
    assert all(_loopback(a) for a in addrs), addrs


@pytest.mark.slow
def test_beeline_reads_the_rows(server: Server) -> None:
    import pyspark

    beeline = Path(pyspark.__file__).parent / "bin" / "beeline"
    query = "SELECT run_id, pipeline, rows_in, accuracy FROM runs ORDER BY run_id"
    proc = subprocess.run(
        [str(beeline), "-u", f"jdbc:hive2://127.0.0.1:{server.port}/dmine", "-n", "dmine"]
        + ["--silent=true", "--outputformat=tsv2", "-e", f"SHOW TABLES IN dmine; {query};"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert "dmine\truns\tfalse" in lines
    start = lines.index("run_id\tpipeline\trows_in\taccuracy")
    assert lines[start + 1 : start + 4] == ["\t".join(str(v) for v in row) for row in ROWS]


@pytest.mark.slow
def test_pyhive_reads_the_rows(server: Server) -> None:
    hive = pytest.importorskip("pyhive.hive", reason="pip install 'pyhive[hive_pure_sasl]' (dev extras)")
    conn = hive.connect(host="127.0.0.1", port=server.port, username="dmine", database="dmine")
    try:
        cur = conn.cursor()
        cur.execute("SELECT run_id, pipeline, rows_in, accuracy FROM runs WHERE rows_in > 50 ORDER BY run_id")
        assert [d[0] for d in cur.description] == ["run_id", "pipeline", "rows_in", "accuracy"]
        assert cur.fetchall() == [r for r in ROWS if r[2] > 50]
        cur.execute("SELECT sum(rows_in) FROM dmine.runs")
        assert cur.fetchone() == (sum(r[2] for r in ROWS),)
    finally:
        conn.close()


@pytest.mark.slow
def test_second_server_on_the_held_catalog_is_one_line(server: Server, catalog: Path) -> None:
    proc = subprocess.run(
        [*SERVE, "--work-dir", str(catalog), "--port", str(_free_port())],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"dmine: error: the dmine catalog in {catalog.resolve()} is open in another process")
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_sigterm_stops_the_server(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    rc = server.proc.wait(timeout=120)
    assert rc == 0, server.stderr_tail()
    time.sleep(0.5)  # the stdout reader thread drains the last line
    assert server.output().endswith("dmine serve-sql: stopped\n")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", server.port))


def test_open_host_without_auth_exits_2_before_any_jvm(tmp_path: Path) -> None:
    code = (
        "import sys; from dmine_spark.tools.serve_sql import main; rc = main(sys.argv[1:]); "
        "print('pyspark loaded' if 'pyspark' in sys.modules else 'no pyspark'); sys.exit(rc)"
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, "--host", "0.0.0.0", "--work-dir", str(tmp_path)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == "no pyspark\n"
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("dmine: error: --host 0.0.0.0 with --auth none: ")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "metastore_db").exists()
