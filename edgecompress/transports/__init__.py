"""Transports: host code that reaches a device (local, ssh, adb). Each returns failures as data (ExecResult).

The top-level `targets/` folder is the other side: what gets copied onto the device (the bench agent).
"""
from edgecompress.transports.base import (AdbReach, ExecResult, LocalReach, Reach, SshReach, Transport,
                                       make_transport, parse_target)

__all__ = ["AdbReach", "ExecResult", "LocalReach", "Reach", "SshReach", "Transport", "make_transport", "parse_target"]
