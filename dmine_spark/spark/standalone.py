"""A Spark standalone cluster on this machine: one master and N workers as separate processes.

Spark's own classes do the work (``spark-class org.apache.spark.deploy.master.Master``
and ``...worker.Worker``), so jobs submitted to it go through the same
scheduler, executor launch, shuffle and failure handling as on a real
cluster. dmine_spark's cluster tests and the cluster benchmark use it; users
can too, to try ``./spark-submit.sh --master spark://...`` before a real cluster::

    with StandaloneCluster(workers=2, cores=1, memory="3g") as cluster:
        subprocess.run(["./spark-submit.sh", "--master", cluster.url, "run", "conf/..."])

Every process is started in its own process group, so :meth:`kill_worker`
takes the worker's executors and Python workers down with it (as losing a
machine does), and :meth:`stop` leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["StandaloneCluster", "spark_home", "free_port"]


def spark_home() -> Path:
    """The Spark installation of the installed pyspark (``SPARK_HOME`` if set)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class StandaloneCluster:
    """One master and ``workers`` workers on ``host``, each worker offering ``cores`` and ``memory``."""

    workers: int = 2
    cores: int = 1
    memory: str = "3g"
    host: str = "127.0.0.1"
    root: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 90.0

    def __post_init__(self) -> None:
        self._own_root = self.root is None
        self.root = Path(self.root or tempfile.mkdtemp(prefix="dmine_standalone_"))
        self.port = free_port(self.host)
        self.url = f"spark://{self.host}:{self.port}"
        self.master: _Proc | None = None
        self.worker_procs: list[_Proc] = []

    # -- processes -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SPARK_HOME=str(spark_home()),
            SPARK_LOCAL_IP=self.host,
            SPARK_LOG_DIR=str(self.root / "logs"),
            SPARK_WORKER_DIR=str(self.root / "work"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        env.update(self.env)
        return env

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        with open(log, "ab") as fh:
            p = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self._env(), cwd=self.root, start_new_session=True
            )
        return _Proc(name, p, log)

    def _wait_for(self, proc: _Proc, pattern: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            if rx.search(text):
                return
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; log {proc.log}:\n{text[-2000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"{proc.name} did not start in {self.start_timeout:.0f}s; log {proc.log}")

    def start(self) -> StandaloneCluster:
        """Start the master, then the workers, and wait until every worker has registered."""
        try:
            self.master = self._spawn(
                "master",
                [
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--webui-port",
                    str(free_port(self.host)),
                ],
            )
            self._wait_for(self.master, r"I have been elected leader|Starting Spark master")
            for _ in range(self.workers):
                self.add_worker()
            self.wait_workers(self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self) -> _Proc:
        """Start one more worker (its own work dir and ports) and return it."""
        i = len(self.worker_procs)
        work = self.root / "work" / f"worker{i}"
        work.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(
            f"worker{i}",
            [
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host",
                self.host,
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(work),
                "--webui-port",
                str(free_port(self.host)),
            ],
        )
        self.worker_procs.append(proc)
        return proc

    def registered_workers(self) -> int:
        """Workers the master has registered and not lost since (from its log)."""
        text = self.master.log.read_text(errors="replace") if self.master else ""
        return len(re.findall(r"Registering worker", text)) - len(re.findall(r"Removing worker", text))

    def wait_workers(self, n: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while self.registered_workers() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.registered_workers()} of {n} workers registered; logs in {self.root}")
            for w in self.worker_procs:
                if not w.alive():
                    raise RuntimeError(f"{w.name} exited; log {w.log}:\n{w.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.25)

    def kill_worker(self, i: int = 0) -> None:
        """Kill worker ``i`` with SIGKILL, with its executors and their Python workers (a lost machine)."""
        proc = self.worker_procs[i]
        _killpg(proc.popen, signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process this cluster started (workers, then master), and its temp folder if it made one."""
        for proc in [*self.worker_procs, *([self.master] if self.master else [])]:
            if proc.alive():
                _killpg(proc.popen, signal.SIGTERM)
        for proc in [*self.worker_procs, *([self.master] if self.master else [])]:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _killpg(proc.popen, signal.SIGKILL)
                proc.popen.wait(timeout=10)
            # executors and Python workers the worker launched share its process group
            _killpg(proc.popen, signal.SIGKILL)

    def cleanup(self) -> None:
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()


def _killpg(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
