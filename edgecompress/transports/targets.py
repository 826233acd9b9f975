"""Target URLs -> reach configs, read from the transport rows (reach.py): `local`, `qemu-arm64[?cpu=...]`,
`ssh://[user@]host[:port][?key=..&known_hosts=..&python=..&workdir=..]`, `adb://[SERIAL][?...]`. The scheme names
the row; the URL's authority fills the fields the row says it carries; every other field is a `?option`.

Fields the URL leaves out come from the profile's reach when it is of the same kind (key, workdir, python), so
`--target ssh://pi@10.0.0.7` reuses the rpi4 profile's settings for another board of the same kind.
"""
from __future__ import annotations

import urllib.parse

from pydantic import ValidationError

from edgecompress.config import first_error, shown
from edgecompress.errors import UserInputError
from edgecompress.registry import TRANSPORTS


def _forms() -> str:
    forms = [r.url or r.name for r in TRANSPORTS.rows()]
    return ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]


def _authority(url: str, row) -> tuple[dict, str]:
    """The fields a `scheme://...` URL carries before its `?`, and its query string."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:  # a malformed IPv6 literal ("ssh://u@[::1")
        raise UserInputError(f"target {shown(url)}: {e}; expected {row.url}") from None
    if parts.fragment or parts.path not in ("", "/"):
        extra = parts.path + (f"#{parts.fragment}" if parts.fragment else "")
        raise UserInputError(f"target {shown(url)}: {shown(extra)} has no meaning in a target; options go after "
                             f"'?', e.g. ssh://pi@host?workdir=/tmp")
    out: dict = {}
    try:
        if "host" in row.authority:
            if not parts.hostname:
                raise UserInputError(f"target {shown(url)}: no host; expected {row.url}")
            out["host"] = parts.hostname
            if parts.username:
                out["user"] = urllib.parse.unquote(parts.username)
            if parts.port:
                out["port"] = parts.port
        elif "serial" in row.authority and parts.netloc:
            out["serial"] = urllib.parse.unquote(parts.netloc)
        elif parts.netloc:
            raise UserInputError(f"target {shown(url)}: {row.name} takes no host; expected {row.url}")
    except ValueError as e:  # urllib: port out of range / not a number
        raise UserInputError(f"target {shown(url)}: {e}") from None
    return out, parts.query


def parse_target(url: str, profile_reach=None):
    url = url.strip()
    # urllib silently drops tabs and newlines inside a URL; a target with any non-printable or non-ASCII
    # character is refused whole instead of being read as some other target.
    odd = next((c for c in url if not (c.isascii() and c.isprintable())), None)
    if odd is not None:
        raise UserInputError(f"target {shown(url)}: character {odd!r} is not allowed in a target URL; "
                             f"type it in plain ASCII")
    scheme = url.split("://", 1)[0] if "://" in url else url.partition("?")[0]
    if scheme not in TRANSPORTS.names():
        raise UserInputError(f"target {shown(url)}: expected {_forms()}")
    row = TRANSPORTS.row(scheme)
    if "://" in url:
        fields, query = _authority(url, row)
    elif "host" in row.authority:
        raise UserInputError(f"target {shown(url)}: no host; expected {row.url}")
    else:
        fields, query = {}, url.partition("?")[2]
    options = dict(urllib.parse.parse_qsl(query))
    unknown = set(options) - set(row.options())
    if unknown:
        raise UserInputError(f"target {shown(url)}: unknown option(s) {shown(sorted(unknown))}; known: "
                             f"{row.options()}")
    base = profile_reach.model_dump() if profile_reach is not None and profile_reach.kind == scheme else {}
    try:
        return row.reach(**{**base, **options, **fields, "kind": scheme})
    except ValidationError as e:
        raise UserInputError(first_error(e, f"target {shown(url)}")) from None
