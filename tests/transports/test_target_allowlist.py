"""Target fields accept an allowlist of characters; what reaches a remote shell is quoted, files included."""
from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
import textwrap
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgecompress.errors import UserInputError
from edgecompress.transports.reach import AdbReach, SshReach
from edgecompress.transports.targets import parse_target

SAFE = {"user": set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"),
        "host": set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:"),
        "serial": set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:"),
        "path": set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/~")}
PATH_FIELDS = ("key", "known_hosts", "workdir", "python", "adb", "qemu", "rootfs")

HOSTILE = [
    ("ssh://a$(touch${IFS}x)@host", "user", "$"),
    ("ssh://pi@host?workdir=/tmp/%60touch%20x%60", "workdir", "`"),
    ("ssh://pi@host?workdir=/tmp/a;b", "workdir", ";"),
    ("ssh://pi@host?python=python3|sh", "python", "|"),
    ("ssh://pi%25h@host", "user", "%"),
    ("ssh://pi@host?key=~/.ssh/id'x", "key", "'"),
    ("ssh://pi@host?known_hosts=/tmp/k%22", "known_hosts", '"'),
    ("adb://emu$(reboot)", "serial", "$"),
    ("adb://emulator-5554?workdir=/data/local/tmp/*", "workdir", "*"),
    ("adb://emulator-5554?adb=adb%26", "adb", "&"),
    ("qemu-arm64?python=/usr/bin/python3%3Bid", "python", ";"),
    ("qemu-arm64?qemu=qemu%3E/tmp/x", "qemu", ">"),
    ("qemu-arm64?rootfs=/srv/root%5Cfs", "rootfs", "\\"),
    ("qemu-arm64?cpu=cortex%24a72", "cpu", "$"),
]


@pytest.mark.parametrize("url,field,char", HOSTILE)
def test_shell_characters_in_a_target_field_are_refused_naming_field_and_character(url, field, char):
    # execute
    with pytest.raises(UserInputError) as e:
        parse_target(url)

    # assert
    msg = str(e.value)
    assert "\n" not in msg and f"field '{field}'" in msg and repr(char) in msg


@pytest.mark.parametrize("url", ["qemu-arm64?python=../../../bin/sh", "qemu-arm64?qemu=/usr/../bin/sh",
                                 "ssh://pi@host?workdir=/tmp/../etc", "adb://x?python=a/../../b"])
def test_a_dotdot_step_in_a_target_path_is_refused(url):
    # execute / assert
    with pytest.raises(UserInputError, match=r"field '\w+': must not contain a '\.\.' path step"):
        parse_target(url)


@pytest.mark.parametrize("url", ["ssh://pi@ho\nst", "ssh://pi@host\t?workdir=/tmp", "ssh://pï@host",
                                 "adb://emu\u200blator", "ssh://pi@host?workdir=/tmp/\u0440"])
def test_control_and_non_ascii_characters_are_refused_not_dropped(url):
    # execute / assert (urllib would silently drop the tab and newline and connect to "host")
    with pytest.raises(UserInputError) as e:
        parse_target(url)
    assert "\n" not in str(e.value) and "character" in str(e.value)


@pytest.mark.parametrize("url", ["ssh://pi@host#$(touch x)", "ssh://pi@host/$(id)", "adb://emu/x"])
def test_a_path_or_fragment_in_a_target_is_refused_not_ignored(url):
    # execute / assert
    with pytest.raises(UserInputError, match="has no meaning in a target"):
        parse_target(url)


@pytest.mark.parametrize("url", ["ssh://pi@raspberrypi.local", "ssh://admin@10.0.0.7:2222?workdir=/home/admin/w",
                                 "ssh://pi@[fe80::1]:22?key=~/.ssh/id_ed25519", "adb://192.168.1.5:5555",
                                 "adb://emulator-5554?python=/data/data/com.termux/files/usr/bin/python3",
                                 "qemu-arm64?cpu=cortex-a76&rootfs=/srv/rootfs", "local"])
def test_ordinary_targets_still_parse(url):
    # execute / assert
    parse_target(url)


# ---------------------------------------------------------------- generated URLs

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_mostly_safe = st.one_of(_text, st.text(alphabet="abcz09._-/:~+$`;|&'\" ()%\n", max_size=12))


def _quote(v: str) -> str:
    return urllib.parse.quote(v, safe="")


@st.composite
def target_urls(draw):
    kind = draw(st.sampled_from(["ssh", "adb", "qemu"]))
    if kind == "ssh":
        user, host = draw(_mostly_safe), draw(_mostly_safe.filter(lambda h: "[" not in h))
        query = {k: draw(_mostly_safe) for k in draw(st.sets(st.sampled_from(["workdir", "python", "key"])))}
        url = f"ssh://{_quote(user) + '@' if user else ''}{host}"
    elif kind == "adb":
        url, query = f"adb://{_quote(draw(_mostly_safe))}", {
            k: draw(_mostly_safe) for k in draw(st.sets(st.sampled_from(["workdir", "python", "adb"])))}
    else:
        url, query = "qemu-arm64", {k: draw(_mostly_safe)
                                    for k in draw(st.sets(st.sampled_from(["python", "qemu", "rootfs", "cpu"])))}
    if query:
        url += "?" + "&".join(f"{k}={_quote(v)}" for k, v in query.items())
    return url


def _check_accepted(reach) -> None:
    fields = reach.model_dump()
    for name, value in fields.items():
        if not isinstance(value, str) or name == "kind":
            continue
        allowed = SAFE["path"] if name in PATH_FIELDS else SAFE.get(name, SAFE["user"])
        assert value and not value.startswith("-") and set(value) <= allowed, (name, value)
        if name in PATH_FIELDS:
            assert ".." not in value.split("/"), (name, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=target_urls())
def test_generated_target_urls_reach_a_command_line_only_through_the_allowlist(url):
    # execute
    try:
        reach = parse_target(url)
    except UserInputError as e:
        # assert: refused in one line that says what
        assert "\n" not in str(e) and str(e).startswith("target ") and len(str(e)) < 600
        return
    # assert: accepted only with allowlisted values, and they reach ssh's argv as the destination word
    _check_accepted(reach)
    if isinstance(reach, SshReach):
        from edgecompress.transports.ssh import SshTransport
        argv = SshTransport(reach)._argv("true")
        assert argv[argv.index("--") + 1] == (f"{reach.user}@{reach.host}" if reach.user else reach.host)


# ---------------------------------------------------------------- what reaches the remote shell

def test_ssh_copies_quote_the_remote_path_and_never_use_scp(monkeypatch, tmp_path):
    # setup: a file name with shell characters (a bare model file a user benches keeps its name on the device)
    import subprocess

    import edgecompress.transports.ssh as ssh_mod
    src = tmp_path / "m.onnx"
    src.write_bytes(b"x")
    calls = []

    def fake_run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, b"", b"")
    monkeypatch.setattr(ssh_mod.subprocess, "run", fake_run)
    t = ssh_mod.SshTransport(parse_target("ssh://pi@board"))
    remote = "/tmp/edgecompress-abc/$(touch x);`id` 'q'.onnx"

    # execute
    t._copy_to(src, remote, 5)
    t._copy_from(remote, tmp_path / "back", 5)

    # assert
    assert all(argv[0] == "ssh" and argv[argv.index("--") + 1] == "pi@board" for argv in calls)
    for argv in calls:
        words = shlex.split(argv[-1])  # what the remote sh will see: the path comes back as one literal word
        assert remote in words


def test_ssh_push_and_pull_a_file_with_shell_characters_in_its_name(sshd, tmp_path):
    # setup
    from edgecompress.transports.ssh import SshTransport
    src = tmp_path / "run.sh"
    src.write_bytes(b"\x00binary\xff")
    src.chmod(0o755)
    name = "a b$(touch pwned);`touch pwned2`.sh"

    # execute
    with SshTransport(sshd) as t:
        pushed = t.push(src, name)
        pulled = t.pull(name, tmp_path / "back")
        ls = t.exec(["ls", "-l"], timeout_s=20)

    # assert
    assert pushed.ok and pulled.ok, (pushed.stderr, pulled.stderr)
    assert (tmp_path / "back").read_bytes() == b"\x00binary\xff"
    assert "pwned" not in ls.stdout.replace(name, "") and "rwx" in ls.stdout


FAKE_ADB = textwrap.dedent('''\
    #!{python}
    import json, os, shutil, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_ADB_LOG"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    if args[:1] == ["-s"]:
        args = args[2:]
    cmd, rest = args[0], args[1:]
    if cmd == "push":
        shutil.copyfile(rest[0], rest[1])
    elif cmd == "pull":
        shutil.copyfile(rest[0], rest[1])
    elif cmd == "shell":  # like adb: the words are joined into one string for the device's sh
        sys.exit(subprocess.run(["sh", "-c", " ".join(rest)], cwd=os.environ["FAKE_ADB_CWD"]).returncode)
''')


def test_adb_shell_gets_every_word_quoted(tmp_path, monkeypatch):
    # setup
    from edgecompress.transports.adb import AdbTransport
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    device, cwd = tmp_path / "device", tmp_path / "cwd"
    device.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("FAKE_ADB_CWD", str(cwd))
    evil = ["$(touch pwned1)", "`touch pwned2`", "; touch pwned3", "a\nb && touch pwned4", "'", "*"]
    reach = AdbReach(serial="emulator-5554", workdir=str(device), adb=str(adb))

    # execute
    with AdbTransport(reach) as t:
        r = t.exec(["printf", "%s|", *evil], timeout_s=20)
        workdir = t.workdir
        listing = sorted(os.listdir(workdir))

    # assert
    assert r.ok and r.stdout == "|".join(evil) + "|"
    assert listing == [] and os.listdir(cwd) == [] and not list(Path(workdir).parent.glob("pwned*"))
    calls = [json.loads(x) for x in (tmp_path / "log").read_text().splitlines()]
    assert all(c[:2] == ["-s", "emulator-5554"] for c in calls)


@pytest.mark.parametrize("serial", ["$(reboot)", "emu;reboot", "-d", "a b", "emu`id`"])
def test_adb_serial_with_shell_or_option_characters_is_refused(serial):
    # execute / assert
    with pytest.raises(UserInputError, match="field 'serial'"):
        parse_target("adb://" + _quote(serial))


@pytest.mark.parametrize("reach,field,char", [
    ({"kind": "ssh", "host": "h", "user": "a$(id)"}, "reach.user", "$"),
    ({"kind": "ssh", "host": "h", "workdir": "/tmp/`id`"}, "reach.workdir", "`"),
    ({"kind": "adb", "serial": "x;reboot"}, "reach.serial", ";"),
    ({"kind": "local", "python": "python3\n"}, "reach.python", "\n"),
])
def test_a_profiles_reach_takes_the_same_allowlist(reach, field, char):
    # setup
    from edgecompress.profiles import parse_profile
    data = {"name": "b", "arch": "aarch64", "os": "linux", "cores": {"big": 4}, "memory_mb": 1024,
            "runtimes": {"onnx": {"runtime": "onnxruntime"}}, "reach": reach}

    # execute
    with pytest.raises(UserInputError) as e:
        parse_profile(data, "profile b")

    # assert
    msg = str(e.value)
    assert "\n" not in msg and re.search(rf"field 'reach\.(\w+\.)?{field.split('.')[1]}'", msg) and repr(char) in msg
