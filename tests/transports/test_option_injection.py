"""No value a user supplies (target URL, profile reach) can reach a command line as an option."""
from __future__ import annotations

import pytest

from edgecompress.errors import UserInputError
from edgecompress.profiles import parse_profile
from edgecompress.transports.targets import parse_target

URLS = ["ssh://-V@host", "ssh://pi@-oProxyCommand%3Dtouch%20x", "ssh://pi@host?key=-oProxyCommand=x",
        "ssh://pi@host?workdir=-rf", "ssh://pi@host?python=-c", "adb://-s", "adb://emulator?python=-c",
        "ssh://pi%0Aroot@host", "ssh://u@[::1"]


@pytest.mark.parametrize("url", URLS)
def test_hostile_target_urls_are_refused_in_one_line(url):
    # execute / assert
    with pytest.raises(UserInputError) as e:
        parse_target(url)
    assert "\n" not in str(e.value) and str(e.value).startswith("target ")


@pytest.mark.parametrize("reach", [{"kind": "ssh", "host": "-oProxyCommand=x"}, {"kind": "ssh", "host": "h", "user": "-V"},
                                   {"kind": "adb", "serial": "-d"}, {"kind": "local", "python": "-c"}])
def test_hostile_profile_reach_is_refused_with_the_field(reach):
    # setup
    data = {"name": "b", "arch": "aarch64", "os": "linux", "cores": {"big": 4}, "memory_mb": 1024,
            "runtimes": {"onnx": {"runtime": "onnxruntime"}}, "reach": reach}
    # execute / assert
    with pytest.raises(UserInputError, match=r"field 'reach\..*must not start with '-'"):
        parse_profile(data, "profile b")


def test_ssh_argv_ends_options_before_the_destination():
    # setup
    from edgecompress.transports.ssh import SshTransport
    t = SshTransport(parse_target("ssh://pi@board.lab:2222"))

    # execute
    argv = t._argv("echo hi")

    # assert
    assert argv[0] == "ssh" and argv[argv.index("--") + 1:] == ["pi@board.lab", "echo hi"]
