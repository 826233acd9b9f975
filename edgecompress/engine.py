"""The engine that executes graph nodes: the content-addressed store, reuse of finished steps, the lock that makes a
concurrent run of the same step wait and reuse it, rank sync under `accelerate launch`, the run folder's links.

It knows nothing of what a step does: a caller hands it a graph node (graph.Step) and a build function that writes
the node's files into a temporary folder. What the run is made of is written down in graph.py, what each step builds
in steps.py.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from edgecompress import progress
from edgecompress.artifact import Artifact, Store
from edgecompress.errors import RuntimeFailure
from edgecompress.graph import Step
from edgecompress.paths import store_dir

Build = Callable[[Path], None]


def process_group():
    """torch.distributed when this process is one rank of a multi-process launch, else None."""
    from edgecompress.compress.train import process_group as group
    return group()


class Engine:
    def __init__(self, run_dir: Path, store: Optional[Store] = None):
        self.store = store or Store(store_dir())
        self.run_dir = Path(run_dir)
        self.lineage: list[dict] = []  # every node this run used, in order: the report's steps table

    def execute(self, node: Step, build: Build, force: bool = False) -> Artifact:
        """The node's artifact: reused when the store has it (and its files match their hashes), else built.

        Multi-process (accelerate launch / torchrun): rank 0 decides and is the only writer of the store and the run
        folder. Training steps run on every rank (their gradients are all-reduced), rank > 0 building into a
        throw-away folder; export/bench run on rank 0 alone (a second copy would skew the latency)."""
        art = None if force else self.store.get(node.step, node.id)
        dist = process_group()
        if dist is not None:
            flag = [art is not None]
            dist.broadcast_object_list(flag, src=0)
            if dist.get_rank() != 0:
                return self._follow(node, build, built=flag[0], dist=dist)
        if art is None:
            with self.store.lock(node.step, node.id):  # a concurrent run of the same step waits here, then reuses it
                art = None if force else self.store.get(node.step, node.id)
                if art is None:
                    art = self._build(node, build)
            if dist is not None:
                dist.barrier()
        else:
            progress.log(f"[{node.label}] reusing {art.path.name}")
        self._record(node, art)
        self._link(node.label, art)
        return art

    def _follow(self, node: Step, build: Build, built: bool, dist) -> Artifact:
        if not built:
            if node.step not in ("export", "bench"):
                with tempfile.TemporaryDirectory() as tmp:
                    build(Path(tmp))
            dist.barrier()
        art = self.store.get(node.step, node.id)
        if art is None:
            raise RuntimeFailure(f"{node.step}: rank {dist.get_rank()} cannot see artifact {node.id} written by rank 0; "
                                 "every rank needs the same EDGECOMPRESS_HOME (a shared file system across nodes)")
        self._record(node, art)
        return art

    def _build(self, node: Step, build: Build) -> Artifact:
        progress.log(f"[{node.label}] running")
        t0 = time.perf_counter()
        with self.store.create(node.step, node.id, node.config, list(node.parent_ids)) as tmp:
            build(tmp)
        art = self.store.get(node.step, node.id)
        if art is None:
            raise RuntimeFailure(f"{node.step}: artifact {node.id} vanished right after it was written; check the disk")
        progress.log(f"[{node.label}] done in {time.perf_counter() - t0:.1f} s -> {art.path}")
        return art

    def _record(self, node: Step, art: Artifact) -> None:
        self.lineage.append({"label": node.label, "step": node.step, "id": art.id,
                             "parents": list(node.parent_ids), "path": str(art.path),
                             "duration_s": art.manifest.get("duration_s")})

    def _link(self, label: str, art: Artifact) -> None:
        link = self.run_dir / "artifacts" / label
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = link.with_name(f".{link.name}.{os.getpid()}")  # replaced atomically: concurrent runs may race here
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(art.path, target_is_directory=True)
        os.replace(tmp_link, link)
