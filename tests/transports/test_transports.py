"""Transports against real endpoints: this machine, a throwaway sshd on 127.0.0.1, and a fake `adb` on PATH."""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import pytest

from edgecompress.bench.harness import bench_file
from edgecompress.errors import UserInputError
from edgecompress.transports.adb import AdbTransport
from edgecompress.transports.reach import AdbReach, LocalReach, SshReach
from edgecompress.transports.targets import parse_target
from edgecompress.transports.local import LocalTransport
from edgecompress.transports.ssh import SshTransport
from edgecompress.registry import TRANSPORTS


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transports_are_registered():
    # execute / assert
    assert {"adb", "local", "ssh"} <= set(TRANSPORTS.names())


def test_local_transport_push_exec_pull_and_failures_as_data(tmp_path):
    # setup
    src = tmp_path / "a.txt"
    src.write_text("hello")

    # execute
    with LocalTransport() as t:
        pushed = t.push(src, "sub/a.txt")
        cat = t.exec(["cat", "sub/a.txt"], timeout_s=10)
        failing = t.exec([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], timeout_s=10)
        slow = t.exec([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.5)
        missing = t.exec(["/nonexistent/binary"], timeout_s=5)
        pulled = t.pull("sub/a.txt", tmp_path / "back.txt")
        workdir = t.workdir

    # assert
    assert pushed.ok and cat.stdout == "hello" and pulled.ok and (tmp_path / "back.txt").read_text() == "hello"
    assert (failing.returncode, failing.stderr, failing.ok) == (3, "boom", False)
    assert slow.timed_out and not slow.ok and slow.duration_s < 4
    assert missing.returncode == 127 and "cannot run" in missing.stderr
    assert not os.path.exists(workdir)  # cleanup on context exit


def test_bench_through_real_sshd_on_localhost(sshd, tiny_model):
    # setup
    model, io = tiny_model

    # execute
    with SshTransport(sshd) as t:
        r = bench_file(model, io, "onnxruntime", transport=t, runs=10, warmup_runs=2, seq_len=32)
        remote_dir = t.workdir

    # assert
    assert r["ok"] is True, r
    assert r["transport"] == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    assert r["p90_ms"] > 0 and r["seq_len"] == 32 and 10 < r["peak_rss_mb"] < 4096
    assert remote_dir.startswith(sshd.workdir + "/edgecompress-")
    assert not os.path.exists(remote_dir)  # cleanup removed the mktemp dir on the "device"


def test_ssh_exec_quotes_every_argument(sshd):
    # setup: shell metacharacters that would run a command if the argv were joined unquoted
    evil = "x; touch pwned && echo $HOME 'q'"

    # execute
    with SshTransport(sshd) as t:
        r = t.exec(["printf", "%s", evil], timeout_s=20)
        ls = t.exec(["ls"], timeout_s=20)

    # assert
    assert r.ok and r.stdout == evil
    assert "pwned" not in ls.stdout


def test_ssh_refuses_an_unknown_host_key(sshd, tmp_path):
    # setup: host key checking stays on, so an empty known_hosts must fail (as data)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    reach = sshd.model_copy(update={"known_hosts": str(empty)})

    # execute
    with SshTransport(reach) as t:
        r = t.exec(["true"], timeout_s=20)

    # assert
    assert not r.ok and "Host key verification failed" in r.stderr


def test_unreachable_ssh_host_returns_failure_as_data(tiny_model, tmp_path):
    # setup: a port nothing listens on
    model, io = tiny_model
    kh = tmp_path / "kh"
    kh.write_text("")
    reach = SshReach(host="127.0.0.1", user="nobody", port=_free_port(), known_hosts=str(kh), connect_timeout_s=2)

    # execute
    with SshTransport(reach) as t:
        r = bench_file(model, io, "onnxruntime", transport=t, runs=2, timeout_s=20)

    # assert
    assert r["ok"] is False and r["stage"] == "connect"
    assert "cannot create a workdir" in r["error"] and "refused" in r["error"].lower()


FAKE_ADB = textwrap.dedent('''\
    #!{python}
    """A fake adb: the "device" is a directory on this machine; logs each call to $FAKE_ADB_LOG."""
    import json, os, shutil, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_ADB_LOG"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    serial = None
    if args[:1] == ["-s"]:
        serial, args = args[1], args[2:]
    if serial != os.environ["FAKE_ADB_SERIAL"]:
        sys.stderr.write(f"adb: device '{{serial}}' not found\\n")
        sys.exit(1)
    cmd, rest = args[0], args[1:]
    if cmd == "push":
        shutil.copyfile(rest[0], rest[1])
        print(f"{{rest[0]}}: 1 file pushed")
    elif cmd == "pull":
        shutil.copyfile(rest[0], rest[1])
    elif cmd == "shell":  # adb joins the words into one string for the device's sh
        sys.exit(subprocess.run(["sh", "-c", " ".join(rest)]).returncode)
    else:
        sys.exit(f"fake adb: unsupported {{cmd}}")
''')


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    device = tmp_path / "device-data-local-tmp"
    device.mkdir()
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_SERIAL", "emulator-5554")
    return device, log


def test_adb_transport_against_fake_adb_on_path(fake_adb, tiny_model):
    # setup
    device, log = fake_adb
    model, io = tiny_model
    reach = AdbReach(serial="emulator-5554", workdir=str(device), python=sys.executable)

    # execute
    with AdbTransport(reach) as t:
        r = bench_file(model, io, "onnxruntime", transport=t, runs=5, warmup_runs=1)
        remote_dir = t.workdir

    # assert
    assert r["ok"] is True, r
    assert r["transport"] == "adb://emulator-5554"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:2] == ["-s", "emulator-5554"] for c in calls)
    assert {c[2] for c in calls} >= {"push", "shell"}
    assert remote_dir.startswith(str(device)) and not os.path.exists(remote_dir)


def test_adb_wrong_serial_is_failure_as_data(fake_adb, tiny_model):
    # setup
    device, _ = fake_adb
    model, io = tiny_model
    reach = AdbReach(serial="not-attached", workdir=str(device), python=sys.executable)

    # execute
    with AdbTransport(reach) as t:
        r = bench_file(model, io, "onnxruntime", transport=t, runs=2)

    # assert
    assert r["ok"] is False and r["stage"] == "connect" and "not-attached" in r["error"]


def test_parse_target_urls_merge_with_profile_reach():
    # setup
    profile_reach = SshReach(host="raspberrypi.local", user="pi", key="~/.ssh/pi", python="python3.11", workdir="/tmp")

    # execute
    ssh = parse_target("ssh://admin@10.0.0.7:2222", profile_reach)
    ssh_q = parse_target("ssh://10.0.0.8?python=python3&connect_timeout_s=3", profile_reach)
    adb = parse_target("adb://R58M123?workdir=/sdcard/x")
    local = parse_target("local", profile_reach)

    # assert
    assert (ssh.host, ssh.user, ssh.port, ssh.key, ssh.python) == ("10.0.0.7", "admin", 2222, "~/.ssh/pi", "python3.11")
    assert (ssh_q.user, ssh_q.python, ssh_q.connect_timeout_s) == ("pi", "python3", 3)
    assert (adb.serial, adb.workdir) == ("R58M123", "/sdcard/x")
    assert local == LocalReach()


@pytest.mark.parametrize("url, fragment", [("ftp://x", "expected local"), ("ssh://", "no host"),
                                           ("ssh://h?pasword=1", "unknown option"), ("ssh://h:99999", "Port out of range")])
def test_parse_target_rejects_bad_urls_in_one_line(url, fragment):
    # execute
    with pytest.raises(UserInputError) as e:
        parse_target(url)

    # assert
    assert fragment in str(e.value) and "\n" not in str(e.value)
