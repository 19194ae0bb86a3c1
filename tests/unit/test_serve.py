"""serve-sql's bind/auth rule, options and pre-JVM checks: no Spark here."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmine_spark.config import ConfigError
from dmine_spark.tools import serve_sql as serve
from dmine_spark.tools.serve_sql import check_bind, is_loopback, jdbc_url, parse_hiveconf, server_conf

LDAP = {"hive.server2.authentication.ldap.url": "ldap://ldap.example.com"}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LocalHost", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.1.2.3", "192.168.0.7", "db.example.com", "::ffff:10.0.0.1"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
@pytest.mark.parametrize("auth", ["none", "nosasl", "NONE"])
def test_loopback_may_serve_without_auth(host: str, auth: str) -> None:
    assert check_bind(host, auth, {}) == auth.upper()


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.1.2.3", "db.example.com"])
@pytest.mark.parametrize("auth", ["none", "nosasl"])
def test_open_auth_off_loopback_is_refused(host: str, auth: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_bind(host, auth, {})
    msg = str(err.value)
    assert "--host" in msg and "--auth" in msg and "\n" not in msg


def test_ldap_off_loopback_needs_its_url() -> None:
    with pytest.raises(ConfigError, match=r"--auth ldap: needs --hiveconf hive\.server2\.authentication\.ldap\.url"):
        check_bind("0.0.0.0", "ldap", {})
    with pytest.raises(ConfigError, match="ldap.url"):
        check_bind("0.0.0.0", "ldap", {"hive.server2.authentication.ldap.url": "  "})
    assert check_bind("0.0.0.0", "LDAP", LDAP) == "LDAP"


def test_kerberos_needs_principal_and_keytab() -> None:
    principal = {"hive.server2.authentication.kerberos.principal": "hive/_HOST@EXAMPLE.COM"}
    with pytest.raises(ConfigError, match="kerberos.keytab") as err:
        check_bind("10.0.0.5", "kerberos", principal)
    assert "principal" not in str(err.value)
    keytab = {"hive.server2.authentication.kerberos.keytab": "/etc/security/hive.keytab"}
    assert check_bind("10.0.0.5", "kerberos", {**principal, **keytab}) == "KERBEROS"


def test_custom_needs_a_class() -> None:
    with pytest.raises(ConfigError, match="custom.authentication.class"):
        check_bind("0.0.0.0", "custom", {})
    assert check_bind("0.0.0.0", "custom", {"hive.server2.custom.authentication.class": "com.acme.Auth"}) == "CUSTOM"


def test_auth_settings_are_needed_on_loopback_too() -> None:
    with pytest.raises(ConfigError, match="ldap.url"):
        check_bind("127.0.0.1", "ldap", {})


def test_unknown_auth_is_refused() -> None:
    with pytest.raises(ConfigError, match="--auth 'pam'"):
        check_bind("127.0.0.1", "pam", {})


@pytest.mark.parametrize(
    ("key", "option"),
    [
        ("hive.server2.thrift.bind.host", "--host"),
        ("hive.server2.thrift.port", "--port"),
        ("hive.server2.authentication", "--auth"),
    ],
)
def test_hiveconf_cannot_move_the_server_off_the_checked_settings(key: str, option: str) -> None:
    with pytest.raises(ConfigError, match=f"set it with {option}"):
        check_bind("127.0.0.1", "none", {key: "0.0.0.0"})


def test_http_transport_is_refused() -> None:
    with pytest.raises(ConfigError, match="binary transport only"):
        check_bind("127.0.0.1", "none", {"hive.server2.transport.mode": "http"})
    assert check_bind("127.0.0.1", "none", {"hive.server2.transport.mode": "binary"}) == "NONE"


def test_parse_hiveconf() -> None:
    got = parse_hiveconf(["a.b=1", "url=ldap://h:389/?x=y", "a.b=2", "empty="])
    assert got == {"a.b": "2", "url": "ldap://h:389/?x=y", "empty": ""}
    for bad in ("novalue", "=x", " =x"):
        with pytest.raises(ConfigError, match="expected KEY=VALUE"):
            parse_hiveconf([bad])
    with pytest.raises(ConfigError, match="Spark setting"):
        parse_hiveconf(["spark.executor.memory=4g"])


def test_server_conf_pins_host_port_auth_and_transport() -> None:
    conf = server_conf("127.0.0.1", 10001, "LDAP", {**LDAP, "hive.server2.transport.mode": "http"})
    assert conf["spark.hadoop.hive.server2.thrift.bind.host"] == "127.0.0.1"
    assert conf["spark.hadoop.hive.server2.thrift.port"] == "10001"
    assert conf["spark.hadoop.hive.server2.authentication"] == "LDAP"
    assert conf["spark.hadoop.hive.server2.transport.mode"] == "binary"
    assert conf["spark.hadoop.hive.server2.authentication.ldap.url"] == "ldap://ldap.example.com"


def test_jdbc_url() -> None:
    assert jdbc_url("127.0.0.1", 10000, "dmine") == "jdbc:hive2://127.0.0.1:10000/dmine"
    assert jdbc_url("::1", 10001, "default") == "jdbc:hive2://[::1]:10001/default"


def test_env_that_would_override_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="HIVE_SERVER2_THRIFT_BIND_HOST=0.0.0.0 would override --host"):
        serve._check_env("127.0.0.1", 10000, {"HIVE_SERVER2_THRIFT_BIND_HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match="HIVE_SERVER2_THRIFT_PORT"):
        serve._check_env("127.0.0.1", 10000, {"HIVE_SERVER2_THRIFT_PORT": "10002"})
    serve._check_env("127.0.0.1", 10000, {"HIVE_SERVER2_THRIFT_BIND_HOST": "127.0.0.1"})


def _parse(argv: list[str]) -> argparse.Namespace:
    from dmine_spark.cli import build_parser

    return build_parser().parse_args(argv)


def test_add_parser_defaults_and_options() -> None:
    args = _parse(["serve-sql"])
    assert (args.host, args.port, args.auth, args.profile, args.database) == (
        "127.0.0.1",
        10000,
        "none",
        "local",
        "dmine",
    )
    assert args.hiveconf == [] and args.work_dir is None
    args = _parse(["serve-sql", "--port", "10001", "--auth", "LDAP", "--hiveconf", "a=1", "--hiveconf", "b=2"])
    assert (args.port, args.auth, args.hiveconf) == (10001, "ldap", ["a=1", "b=2"])


@pytest.mark.parametrize("argv", [["--port", "70000"], ["--port", "x"], ["--auth", "pam"]])
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(["serve-sql", *argv])
    assert exc.value.code == 2


def test_main_refuses_open_bind_before_any_session(monkeypatch, capsys, tmp_path: Path) -> None:
    import dmine_spark.spark.session as session

    def no_session(*_a, **_k):
        raise AssertionError("a Spark session was started")

    monkeypatch.setattr(session, "build_session", no_session)
    rc = serve.main(["--host", "0.0.0.0", "--work-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("dmine: error: --host 0.0.0.0 with --auth none:")


def test_main_without_catalog_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    import dmine_spark.spark.session as session

    monkeypatch.setattr(session, "build_session", lambda *a, **k: pytest.fail("a Spark session was started"))
    assert serve.main(["--work-dir", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == f"dmine: error: no dmine catalog in {tmp_path}; run `dmine run <config>` first or pass --work-dir\n"
    )


_HOLD_LOCK = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX record locks")
def test_catalog_in_use_sees_another_process_lock(tmp_path: Path) -> None:
    assert not serve.catalog_in_use(tmp_path)  # no metastore at all
    lock = tmp_path / "metastore_db" / "dbex.lck"
    lock.parent.mkdir()
    lock.write_text("x")
    assert not serve.catalog_in_use(tmp_path)
    # as a booted Derby does: another process holds an exclusive lock on dbex.lck
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert serve.catalog_in_use(tmp_path)
    finally:
        holder.communicate("", timeout=10)
    assert not serve.catalog_in_use(tmp_path)


def test_in_memory_profile_is_refused(monkeypatch, capsys, tmp_path: Path) -> None:
    spark_dir = tmp_path / "conf" / "base" / "spark"
    spark_dir.mkdir(parents=True)
    (spark_dir / "mem.yaml").write_text("catalog: in-memory\n")
    monkeypatch.setenv("DMINE_CONF_DIR", str(tmp_path / "conf"))
    assert serve.main(["--profile", "mem", "--work-dir", str(tmp_path)]) == 2
    assert "--profile mem: catalog is in-memory" in capsys.readouterr().err
