"""Transports: host code that reaches a device (local, ssh, adb, qemu-arm64). Each returns failures as data
(ExecResult). reach.py says how a device is reached (configs and rows), targets.py reads a target URL, base.py is the
interface every transport implements.

The top-level `targets/` folder is the other side: what gets copied onto the device (the bench agent).
"""
