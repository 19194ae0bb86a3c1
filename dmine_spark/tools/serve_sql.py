"""``dmine serve-sql``: a JDBC/ODBC SQL endpoint over the dmine catalog.

Spark's own Thrift JDBC server (HiveThriftServer2, the HiveServer2 protocol)
is started inside a dmine session, so clients (``beeline``, JDBC, PyHive, BI
tools) see exactly the tables, warehouse and Delta Lake setup of the other
``dmine`` commands.

The catalog is an embedded Derby metastore, which one process at a time can
open: while ``serve-sql`` runs it holds the catalog, and other ``dmine``
commands on the same work dir fail until it stops. Query through the server
instead, e.g. ``beeline -u jdbc:hive2://127.0.0.1:10000/dmine``.

Safety: the server listens on 127.0.0.1 by default. Any address that is not
a loopback one needs ``--auth`` other than ``none``/``nosasl``, with the
settings that mode needs (see :func:`check_bind`); this is checked before a
JVM starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmine_spark.config import ConfigError, SparkProfile, WorkDir, load_profile

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "HELP",
    "DESCRIPTION",
    "AUTH_MODES",
    "add_arguments",
    "catalog_in_use",
    "check_bind",
    "driver_class_path",
    "is_loopback",
    "jdbc_url",
    "main",
    "parse_hiveconf",
    "run",
    "server_conf",
]

log = logging.getLogger(__name__)


# HiveServer2's authentication modes as Spark ships them. PAM is left out: it needs the JPam
# native library, which Spark does not bundle.
AUTH_MODES = ("none", "nosasl", "ldap", "kerberos", "custom")
_OPEN_MODES = ("none", "nosasl")  # anyone who reaches the port gets in
_AUTH_NEEDS = {
    "ldap": ("hive.server2.authentication.ldap.url",),
    "kerberos": ("hive.server2.authentication.kerberos.principal", "hive.server2.authentication.kerberos.keytab"),
    "custom": ("hive.server2.custom.authentication.class",),
}
# set by serve-sql's own options, so that the address and auth checked are the ones served
_OWN_KEYS = {
    "hive.server2.thrift.bind.host": "--host",
    "hive.server2.thrift.port": "--port",
    "hive.server2.authentication": "--auth",
}
_TRANSPORT_KEY = "hive.server2.transport.mode"
# HiveServer2 reads these before its conf; left set they would move the server off --host/--port
_ENV_OVERRIDES = {"HIVE_SERVER2_THRIFT_BIND_HOST": "--host", "HIVE_SERVER2_THRIFT_PORT": "--port"}
_DERBY_LOCKED = ("XSDB6", "Another instance of Derby may have already booted")
_POLL_S = 2.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only (``localhost``, 127.x, ``::1``).

    No name is resolved: anything but ``localhost`` and a loopback IP literal counts as reachable
    from outside, including the empty host, which HiveServer2 binds to every interface.
    """
    host = host.strip()
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_hiveconf(items: Sequence[str] | None) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from ``--hiveconf`` as a dict; the last value of a key wins."""
    out: dict[str, str] = {}
    for text in items or []:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--hiveconf {text!r}: expected KEY=VALUE, e.g. hive.server2.authentication.ldap.url=ldap://host"
            )
        if key.startswith("spark."):
            raise ConfigError(f"--hiveconf {key}: a Spark setting; put it in the Spark profile's conf instead")
        out[key] = value
    return out


def check_bind(host: str, auth: str, hiveconf: Mapping[str, str] | None = None) -> str:
    """Check that serving on ``host`` with ``auth`` is safe and complete; return HiveServer2's auth name.

    Parameters
    ----------
    host : str
        Address to listen on.
    auth : str
        One of :data:`AUTH_MODES`, any case.
    hiveconf : mapping, optional
        Hive settings the server gets (``--hiveconf`` and the profile's ``spark.hadoop.*``).

    Returns
    -------
    str
        The ``hive.server2.authentication`` value, e.g. ``NONE`` or ``LDAP``.

    Raises
    ------
    ConfigError
        A non-loopback ``host`` with ``none``/``nosasl``; an auth mode without the settings it
        needs; or a ``hiveconf`` key that would move the server off ``host``/``--port``/``auth``.
    """
    hiveconf = hiveconf or {}
    mode = auth.strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigError(f"--auth {auth!r}: expected one of {', '.join(AUTH_MODES)}")
    for key, option in _OWN_KEYS.items():
        if key in hiveconf:
            raise ConfigError(f"--hiveconf {key}: set it with {option}, so that serve-sql checks what it serves")
    transport = hiveconf.get(_TRANSPORT_KEY, "binary").strip().lower()
    if transport != "binary":
        raise ConfigError(f"--hiveconf {_TRANSPORT_KEY}={transport}: serve-sql serves the binary transport only")
    if mode in _OPEN_MODES and not is_loopback(host):
        raise ConfigError(
            f"--host {host or '(all interfaces)'} with --auth {mode}: anyone who can reach the port could read "
            f"the catalog; bind to 127.0.0.1, or set --auth ldap|kerberos|custom with its --hiveconf settings"
        )
    lacking = [k for k in _AUTH_NEEDS.get(mode, ()) if not str(hiveconf.get(k, "")).strip()]
    if lacking:
        raise ConfigError(f"--auth {mode}: needs " + " and ".join(f"--hiveconf {k}=..." for k in lacking))
    return mode.upper()


def _check_env(host: str, port: int, environ: Mapping[str, str]) -> None:
    asked = {"--host": host, "--port": str(port)}
    for var, option in _ENV_OVERRIDES.items():
        value = environ.get(var)
        if value is not None and value.strip() != asked[option]:
            raise ConfigError(f"environment variable {var}={value} would override {option} {asked[option]}; unset it")


def jdbc_url(host: str, port: int, database: str) -> str:
    """``jdbc:hive2://host:port/database``, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"jdbc:hive2://{host}:{port}/{database}"


def server_conf(host: str, port: int, auth: str, hiveconf: Mapping[str, str]) -> dict[str, str]:
    """Spark conf entries that configure the Thrift server.

    They go into the SparkConf when the session starts, so every Hive conf the JVM makes carries
    them: setting them on a live session is not enough, because HiveThriftServer2 can reuse a Hive
    session state made before, and then falls back to port 10000 on every interface.
    """
    conf = {f"spark.hadoop.{k}": v for k, v in hiveconf.items()}
    conf.update(
        {
            "spark.hadoop.hive.server2.thrift.bind.host": host,
            "spark.hadoop.hive.server2.thrift.port": str(port),
            "spark.hadoop.hive.server2.authentication": auth,
            "spark.hadoop.hive.server2.transport.mode": "binary",
        }
    )
    return conf


def _profile_hiveconf(profile: SparkProfile) -> dict[str, str]:
    """The profile's Hadoop/Hive settings (``spark.hadoop.KEY``) as ``KEY``, minus those serve-sql sets."""
    prefix = "spark.hadoop."
    out = {k[len(prefix) :]: v for k, v in profile.conf.items() if k.startswith(prefix)}
    return {k: v for k, v in out.items() if k not in _OWN_KEYS and k != _TRANSPORT_KEY}


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (as Java does it, with SO_REUSEADDR)."""
    if port == 0:
        return True
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"--host {host}: not an address of this machine") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == 99:  # EADDRNOTAVAIL
                raise ConfigError(f"--host {host}: not an address of this machine") from None
            return False
    return True


def _classes(jar: Path) -> set[str]:
    with zipfile.ZipFile(jar) as z:
        return {n for n in z.namelist() if n.endswith(".class") and not n.startswith("META-INF/") and "/" in n}


def driver_class_path() -> list[str]:
    """Jars that serve-sql's driver needs on its class path: Delta Lake's, when the jar cache has them.

    JDBC sessions run under a Hive class loader whose parent is the JVM's class path, not the
    loader of ``spark.jars`` (delta-io/delta#1332); without the jars there, every client session
    fails to load Delta's catalog. The driver class path comes before Spark's own jars, so a
    cached jar with any class Spark ships (older Jackson, Parquet, Hadoop...) is left out.
    Under ``spark-submit`` pass them with ``--driver-class-path``.
    """
    from pyspark.find_spark_home import _find_spark_home

    from dmine_spark.spark.jars import have, jar_files

    if not have("delta"):  # as build_session's table_format "auto"
        return []
    spark_classes: set[str] = set()
    for jar in sorted((Path(_find_spark_home()) / "jars").glob("*.jar")):
        spark_classes |= _classes(jar)
    return [str(j) for j in jar_files("delta") if not _classes(j) & spark_classes]


def _driver_class_path(profile: SparkProfile) -> dict[str, str]:
    jars = driver_class_path()
    if not jars:
        return {}
    have_cp = [p for p in profile.conf.get("spark.driver.extraClassPath", "").split(os.pathsep) if p]
    return {"spark.driver.extraClassPath": os.pathsep.join([*have_cp, *(j for j in jars if j not in have_cp)])}


def _check_session_catalog(spark: "SparkSession") -> None:
    """Fail early when JDBC sessions could not load the session catalog's class (Delta Lake's, say)."""
    name = spark.sparkContext.getConf().get("spark.sql.catalog.spark_catalog", "")
    if not name:
        return
    jvm = spark._jvm
    hive_loader = jvm.java.lang.Class.forName("org.apache.hadoop.hive.ql.session.SessionState").getClassLoader()
    try:
        jvm.java.lang.Class.forName(name, False, hive_loader)
    except Exception:  # py4j wraps the ClassNotFoundException
        raise ConfigError(
            f"serve-sql: JDBC sessions cannot load the session catalog {name}: its jars must be on the driver "
            "class path (under spark-submit: --driver-class-path with the jars of --jars)"
        ) from None


def catalog_in_use(work_dir: Path) -> bool:
    """Whether another process has the Derby metastore under ``work_dir`` open, without a JVM.

    A booted Derby database holds an exclusive lock on ``dbex.lck`` (a POSIX record lock, which
    Python's :func:`fcntl.lockf` sees); when the lock cannot be tested, the answer is False and the
    JVM's own error is reported later.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    try:
        fd = os.open(WorkDir(Path(work_dir)).metastore / "dbex.lck", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the lock if we got it
    return False


def _in_use_error(work_dir: Path) -> ConfigError:
    return ConfigError(
        f"the dmine catalog in {work_dir} is open in another process (its Derby metastore allows one at a "
        "time); stop that dmine command or serve-sql, or query through the running serve-sql"
    )


def _java_text(exc: BaseException) -> str:
    """The messages of the Java exception behind a py4j or pyspark error, causes included."""
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    parts = [str(exc)]
    try:
        for _ in range(64):  # a cause chain, never a cycle in practice
            if java is None:
                break
            parts.append(str(java.toString()))
            java = java.getCause()
    except Exception:  # the gateway may be gone; what was read still helps
        pass
    return "\n".join(parts)


def _open_catalog(spark: "SparkSession", work_dir: Path, database: str) -> None:
    """Open the metastore now, so that a lock taken since the first check is a one-line error too."""
    jvm = spark._jvm
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    level = jvm.org.apache.logging.log4j.LogManager.getLogger("DataNucleus").getLevel()
    # DataNucleus logs each failed attempt to boot a locked Derby with pages of stack trace
    configurator.setLevel("DataNucleus", jvm.org.apache.logging.log4j.Level.OFF)
    try:
        found = spark.catalog.databaseExists(database)
    except Exception as exc:  # py4j and pyspark wrap the Derby error differently
        if any(m in _java_text(exc) for m in _DERBY_LOCKED):
            raise _in_use_error(work_dir) from None
        raise
    finally:
        configurator.setLevel("DataNucleus", level)
    if not found:
        names = ", ".join(sorted(d.name for d in spark.catalog.listDatabases()))
        raise ConfigError(f"--database {database}: not in the catalog in {work_dir} (it has: {names})")


def _thrift_service(server: Any) -> Any:
    for service in server.getServices():
        if "ThriftBinaryCLIService" in service.getClass().getName():
            return service
    raise RuntimeError("HiveThriftServer2 started without its binary Thrift service")


def _start_server(spark: "SparkSession", host: str, port: int, auth: str) -> tuple[Any, int]:
    """Start HiveThriftServer2 on ``spark``; return it and the port it listens on."""
    thrift = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    try:
        # startWithSparkSession(..., exitOnError=False): a failed start raises instead of exiting the JVM
        server = thrift.startWithSparkSession(spark._jsparkSession, False)
    except Exception as exc:
        text = _java_text(exc)
        if "Address already in use" in text or "Could not create ServerSocket" in text:
            raise ConfigError(f"--port {port}: {host}:{port} is in use; pick another port") from None
        raise
    # the server must listen exactly where check_bind allowed it to; anything else is a bug to stop on
    conf = server.getHiveConf()
    served = {k: conf.get(k) for k in _OWN_KEYS}
    wanted = {"hive.server2.thrift.bind.host": host, "hive.server2.authentication": auth}
    wrong = {k: v for k, v in wanted.items() if served[k] != v}
    actual_port = int(_thrift_service(server).getPortNumber())
    if wrong or (port and actual_port != port):
        server.stop()
        raise RuntimeError(f"HiveThriftServer2 started with {served} (port {actual_port}), not {wanted} port {port}")
    return server, actual_port


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``serve-sql``."""
    p.add_argument("--work-dir", help="catalog folder (default: $DMINE_WORK_DIR or ./dmine_work)")
    p.add_argument("--profile", default="local", help="Spark profile (default: local)")
    p.add_argument("--database", default="dmine", help="database clients start in (default: dmine)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1); any non-loopback address needs --auth",
    )
    p.add_argument("--port", type=_port, default=10000, help="port to listen on (default: 10000; 0: any free port)")
    p.add_argument(
        "--auth",
        type=str.lower,
        choices=AUTH_MODES,
        default="none",
        help="HiveServer2 authentication (default: none, loopback only); ldap needs "
        "--hiveconf hive.server2.authentication.ldap.url=..., kerberos the principal and keytab, "
        "custom hive.server2.custom.authentication.class=...",
    )
    p.add_argument(
        "--hiveconf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hive/HiveServer2 setting, e.g. hive.server2.authentication.ldap.baseDN=...; repeatable",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


HELP = "serve the dmine catalog over JDBC/ODBC (HiveServer2 protocol) until Ctrl-C; holds the catalog meanwhile"
DESCRIPTION = (
    "Serve the dmine catalog over JDBC/ODBC (the HiveServer2 protocol of Spark's Thrift server) until Ctrl-C "
    "or SIGTERM. The catalog's Derby metastore allows one process at a time: while serve-sql runs, other dmine "
    "commands on the same work dir fail, so query through the server. It listens on 127.0.0.1 by default; any "
    "other address needs --auth ldap, kerberos or custom."
)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then stop the server and the session; return the exit code.

    Raises
    ------
    ConfigError
        Unsafe or incomplete bind/auth settings (before any JVM starts), no catalog in the work
        dir, the catalog held by another process, or the port in use.
    """
    profile = _profile(args.profile)
    if profile.catalog != "hive":
        raise ConfigError(f"--profile {args.profile}: catalog is {profile.catalog}; serve-sql serves a hive catalog")
    host = args.host.strip()
    hiveconf = {**_profile_hiveconf(profile), **parse_hiveconf(args.hiveconf)}
    auth = check_bind(host, args.auth, hiveconf)
    _check_env(host, args.port, os.environ)
    work_dir = WorkDir.of(args.work_dir).root
    if not WorkDir(work_dir).metastore.exists():
        raise ConfigError(f"no dmine catalog in {work_dir}; run `dmine run <config>` first or pass --work-dir")
    # a dmine command that has just ended may keep its JVM (and the lock) for a few seconds
    deadline = time.monotonic() + 15.0
    while catalog_in_use(work_dir):
        if time.monotonic() > deadline:
            raise _in_use_error(work_dir)
        time.sleep(0.5)
    if not _port_free(host, args.port):
        raise ConfigError(f"--port {args.port}: {host}:{args.port} is in use; pick another port")

    from dmine_spark.spark.session import build_session

    conf = {**profile.conf, **server_conf(host, args.port, auth, parse_hiveconf(args.hiveconf))}
    conf.update(_driver_class_path(profile))
    spark = build_session(profile.model_copy(update={"conf": conf}), work_dir, app_name="dmine-serve-sql")
    server = None
    try:
        if spark.sparkContext.getConf().get("spark.hadoop.hive.server2.thrift.bind.host") != host:
            raise ConfigError("serve-sql: this Spark session was started before serve-sql could configure it")
        _check_session_catalog(spark)
        _open_catalog(spark, work_dir, args.database)
        server, port = _start_server(spark, host, args.port, auth)
        return _serve(spark, host, port, args.database, auth, work_dir)
    finally:
        if server is not None:
            try:
                server.stop()
            except Exception:  # the JVM may be gone already; stopping the session still matters
                log.warning("serve-sql: stopping the Thrift server failed", exc_info=True)
        spark.stop()


def _serve(spark: "SparkSession", host: str, port: int, database: str, auth: str, work_dir: Path) -> int:
    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        caught.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        out = sys.stdout
        out.write(
            f"dmine serve-sql: {jdbc_url(host, port, database)} (auth {auth}); "
            f"holds the catalog in {work_dir}; Ctrl-C stops\n"
        )
        out.flush()
        jsc = spark.sparkContext._jsc.sc()
        while not stop.wait(_POLL_S):
            if jsc.isStopped():
                sys.stderr.write("dmine serve-sql: the Spark session stopped; the server is down\n")
                return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("serve-sql: signal %s, stopping", caught[0] if caught else "?")
    sys.stdout.write("dmine serve-sql: stopped\n")
    sys.stdout.flush()
    return 0


def _profile(name: str) -> SparkProfile:
    # as `dmine sql`: profiles are found under $DMINE_CONF_DIR or ./conf, else Spark's defaults
    try:
        return load_profile(name, None)
    except ConfigError:
        return SparkProfile()


def main(argv: Sequence[str] | None = None) -> int:
    """``serve-sql`` as a program of its own: ``python -m dmine_spark.tools.serve_sql --port 10001``."""
    parser = argparse.ArgumentParser(prog="dmine serve-sql", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return run(args)
    except ConfigError as exc:
        sys.stderr.write(f"dmine: error: {exc}\n")
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the session starts; once serving, Ctrl-C is a clean stop
        sys.stderr.write("dmine: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
