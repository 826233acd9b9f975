"""Two processes building the same artifact on one store: one builds, the other waits and reuses; no half artifact."""
from __future__ import annotations

import json
import multiprocessing as mp
import time

from edgecompress.artifact import Store


def _build(root: str, marker_dir: str, q) -> None:
    store = Store(root)
    with store.lock("step", "abc"):
        art = store.get("step", "abc")
        if art is None:
            with store.create("step", "abc", {"x": 1}, []) as tmp:
                (tmp / "data.bin").write_bytes(b"x" * 1_000_000)
                time.sleep(0.5)  # long enough that the other process arrives while this one builds
            built = True
        else:
            built = False
    q.put(built)


def test_concurrent_builders_of_one_artifact_build_it_once(tmp_path):
    # setup
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tmp_path / "store"), str(tmp_path), q)) for _ in range(3)]
    # execute
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = sorted(q.get(timeout=5) for _ in procs)
    # assert
    assert all(p.exitcode == 0 for p in procs)
    assert results == [False, False, True]
    art = Store(tmp_path / "store").get("step", "abc")
    assert art is not None and art.hash_problem() is None
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_a_forced_rebuild_replaces_the_artifact_whole(tmp_path):
    # setup
    store = Store(tmp_path / "store")
    for payload in (b"first", b"second"):
        # execute
        with store.create("step", "abc", {}, []) as tmp:
            (tmp / "data.bin").write_bytes(payload)
    # assert
    art = store.get("step", "abc")
    assert (art.path / "data.bin").read_bytes() == b"second"
    assert json.loads((art.path / "manifest.json").read_text())["files"]["data.bin"]["bytes"] == 6
