"""A home shared by processes and nodes: readers never move anything aside without the artifact's lock, and
leftovers are cleaned only by the host that wrote them. Real processes, paused at the racy point by a hook."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from edgecompress.artifact import MANIFEST, Store, host_tag

# A reader process: Store.get with Artifact.open hooked so that, right after reading the manifest the first time,
# it says so (flag file "opened-<n>") and waits for "go" — the moment another process can rebuild or move it.
READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import edgecompress.artifact as A
    root, flags, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    real_open, calls = A.Artifact.open.__func__, []
    def hooked(cls, path):
        art = real_open(cls, path)
        calls.append(1)
        if len(calls) == 1:
            (flags / f"opened-{n}").touch()
            deadline = time.time() + 60
            while not (flags / "go").exists() and time.time() < deadline:
                time.sleep(0.01)
        return art
    A.Artifact.open = classmethod(hooked)
    try:
        art = A.Store(root).get("bench", "abc")
        print(json.dumps({"metrics": None if art is None else art.metrics}))
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
""")


def _write(store: Store, run: int) -> None:
    with store.create("bench", "abc", {}, []) as d:
        (d / "result.json").write_text(json.dumps({"p50_ms": run}))
        (d / "metrics.json").write_text(json.dumps({"run": run}))


def _start_reader(root: Path, flags: Path, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", READER, str(root), str(flags), str(n)], stdout=subprocess.PIPE,
                            text=True, env=env)


def _wait_for(path: Path, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while not path.exists():
        assert time.time() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def test_a_reader_that_catches_a_rebuild_mid_read_keeps_the_fresh_artifact(tmp_path):
    # setup: run 1 exists; a reader process has read its manifest and is paused
    root, flags = tmp_path / "store", tmp_path / "flags"
    flags.mkdir()
    store = Store(root)
    _write(store, 1)
    reader = _start_reader(root, flags, 0)
    _wait_for(flags / "opened-0")

    # execute: this process rebuilds it (--rebench) under the lock, then lets the reader verify what it read
    with store.lock("bench", "abc"):
        _write(store, 2)
    (flags / "go").touch()
    out = json.loads(reader.communicate(timeout=120)[0])

    # assert: the reader got the fresh artifact; nothing was moved aside; the id still points at run 2
    assert out == {"metrics": {"run": 2}}
    assert not [p.name for p in root.iterdir() if ".corrupt-" in p.name]
    assert json.loads((store.path_for("bench", "abc") / MANIFEST).read_text())["metrics"] == {"run": 2}
    assert store.get("bench", "abc").metrics == {"run": 2}


def test_two_readers_of_one_corrupt_artifact_move_it_aside_once(tmp_path):
    # setup: a corrupt artifact; two reader processes both read its manifest, then both verify it
    root, flags = tmp_path / "store", tmp_path / "flags"
    flags.mkdir()
    store = Store(root)
    _write(store, 1)
    (store.path_for("bench", "abc") / "result.json").write_text("corrupted")
    readers = [_start_reader(root, flags, n) for n in (0, 1)]
    for n in (0, 1):
        _wait_for(flags / f"opened-{n}")

    # execute
    (flags / "go").touch()
    outs = [json.loads(r.communicate(timeout=120)[0]) for r in readers]

    # assert: neither crashed on the other's move, both say "not there", it was moved aside exactly once
    assert outs == [{"metrics": None}, {"metrics": None}]
    assert len([p for p in root.iterdir() if ".corrupt-" in p.name]) == 1
    assert not store.path_for("bench", "abc").exists()


def test_a_corrupt_artifact_is_moved_aside_by_a_lone_reader(tmp_path):
    # setup
    store = Store(tmp_path)
    _write(store, 1)
    (store.path_for("bench", "abc") / "result.json").write_text("x")

    # execute
    got = store.get("bench", "abc")

    # assert
    assert got is None and len([p for p in tmp_path.iterdir() if ".corrupt-" in p.name]) == 1


def test_leftovers_are_cleaned_only_by_their_own_host(tmp_path):
    # setup: in-progress folders of a dead pid here, of another node (its pid means nothing here), of a live pid
    dead_here = tmp_path / f".tmp-{host_tag()}-999999999-aa-export"
    other_node = tmp_path / ".tmp-h0123456789-999999999-bb-export"
    other_old = tmp_path / ".old-h0123456789-999999999-cc-export-abc"
    live_here = tmp_path / f".tmp-{host_tag()}-{os.getpid()}-dd-export"
    for d in (dead_here, other_node, other_old, live_here):
        d.mkdir()

    # execute
    Store(tmp_path)

    # assert
    assert not dead_here.exists() and other_node.exists() and other_old.exists() and live_here.exists()


def test_a_writer_names_its_host_in_its_temporary_folder(tmp_path):
    # setup
    store = Store(tmp_path)
    seen = []

    # execute
    with store.create("export", "abc", {}, []) as d:
        seen.append(d.name)
        (d / "m.onnx").write_bytes(b"x")

    # assert
    assert seen[0].startswith(f".tmp-{host_tag()}-{os.getpid()}-")


def test_the_lock_holder_checks_a_corrupt_artifact_without_waiting_on_itself(tmp_path):
    # setup: a build step holds the lock (as the pipeline does) and finds the artifact corrupt, via another Store
    import threading
    store = Store(tmp_path)
    _write(store, 1)
    (store.path_for("bench", "abc") / "result.json").write_text("x")
    got = []

    def step():
        with store.lock("bench", "abc"):
            got.append(Store(tmp_path).get("bench", "abc"))

    # execute
    t = threading.Thread(target=step, daemon=True)
    t.start()
    t.join(30)

    # assert: no self-deadlock; moved aside once
    assert not t.is_alive() and got == [None]
    assert len([p for p in tmp_path.iterdir() if ".corrupt-" in p.name]) == 1
