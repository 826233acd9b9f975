"""Native runners: build the C++ ExecuTorch runner (targets/native/pte_runner.cpp) per CPU ABI, as a cached,
self-contained bundle folder that the host pushes to a device and runs instead of the Python agent.

Why a native runner: the same .pte measured by the Python agent carries torch + the pybindings (import ~4 s,
~360 MB peak RSS for a 0.2 MB model); an app links ExecuTorch's C++ runtime alone. pte_runner speaks the agent's
protocol (edgecompress/device/protocol.py: same arguments, one JSON line, "runner": "native").

A bundle (`build_runner(abi)` returns its folder) holds:
  pte_runner            the runner, RUNPATH $ORIGIN
  lib*.so               ExecuTorch's runtime, XNNPACK delegate, optimized + quantized kernels and thread pool, from
                        the executorch wheel of that ABI (the installed one for the host, `pip download` otherwise)
  ld-linux-*.so.*, libc.so.6, libm.so.6, libstdc++.so.6, libgcc_s.so.1, libpthread.so.0, libdl.so.2
                        the compiler's own glibc and C++ runtime: the bundle needs no glibc on the device (Android's
                        /data/local/tmp has bionic only) and no sysroot under qemu
  pte_runner.sh         `sh pte_runner.sh ARGS`: runs pte_runner through the bundled loader
  build.json            executorch version, ABI, compiler, build time, every file's sha256 and the bundle size

Built with one compiler command line rather than CMake: the wheel's executorch-config.cmake gives imported targets
only on CMake >= 3.28 (Debian bookworm has 3.25, and older CMake writes $ORIGIN wrongly), its variables route needs
the same include dirs, definitions and --no-as-needed flags spelled out anyway, and cross-compiling would add a
toolchain file. The whole build is the flags in `_compile_argv`.

Cache: $EDGECOMPRESS_HOME/native (default ~/.cache/edgecompress/native)/<key>, key = executorch version x ABI x a
hash of the sources and flags, so an edited runner or another wheel rebuilds and nothing else does. A build is made
in a temporary folder and renamed into place, so a half-finished build is never reused. A cached build is used only
while its folder holds exactly the files build.json lists, each matching its sha256 (CI caches this folder between
jobs: an edited launcher must be rebuilt, not run); otherwise it is rebuilt, saying so in one line. After a build
only the two most recently used builds per ABI are kept (prune_builds).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgecompress.errors import RuntimeFailure, UserInputError

RUNNER = "pte_runner"
LAUNCHER = "pte_runner.sh"
RECORD = "build.json"
KEEP_BUILDS = 2  # runner builds kept per ABI
# Registration-only libraries (kernels and the delegate register from static initializers) must be linked with
# --no-as-needed or the linker drops them; kernels_optimized carries aten::embedding.out, which BERT needs.
ET_LIBS = ("executorch", "executorch_threadpool", "executorch_kernels_optimized", "executorch_kernels_quantized",
           "executorch_backend_xnnpack")
# What the runner and the ExecuTorch libraries need from the toolchain (their DT_NEEDED closure, glibc 2.36:
# libpthread and libdl are stubs there but are still named by the wheel's libraries).
SYSTEM_LIBS = ("libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2")
SOURCES = ("pte_runner.cpp", "runner_common.h", "mini_json.h", "et_threadpool.h")


@dataclass(frozen=True)
class Abi:
    name: str
    cross_compiler: str  # the Debian cross g++ that targets this ABI from another host
    cross_package: str   # its apt package
    loader: str          # glibc's dynamic loader for this ABI
    wheel_platform: str  # pip's --platform for the executorch wheel


ABIS = {
    "x86_64": Abi("x86_64", "x86_64-linux-gnu-g++", "g++-x86-64-linux-gnu", "ld-linux-x86-64.so.2",
                  "manylinux_2_28_x86_64"),
    "aarch64": Abi("aarch64", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "ld-linux-aarch64.so.1",
                   "manylinux_2_28_aarch64"),
}
ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}


def host_abi() -> str:
    machine = platform.machine().lower()
    return ALIASES.get(machine, machine)


def native_home() -> Path:
    from edgecompress.paths import native_dir
    return native_dir()


def sources_dir() -> Path:
    """targets/native as shipped (edgecompress/resources/targets -> top-level targets/)."""
    import importlib.resources
    return Path(str(importlib.resources.files("edgecompress") / "resources" / "targets" / "native"))


def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("executorch")
    except PackageNotFoundError:
        raise UserInputError("executorch is not installed: pip install 'edgecompress[pte]'") from None


def resolve_abi(abi: Optional[str]) -> Abi:
    name = ALIASES.get((abi or host_abi()).lower(), (abi or host_abi()).lower())
    if name not in ABIS:
        raise UserInputError(f"no native runner for ABI {abi!r}; known: {', '.join(ABIS)}")
    return ABIS[name]


def compiler_for(abi: Abi) -> str:
    """The host's g++ for its own ABI, else the cross compiler; a one-line error naming the package otherwise."""
    if abi.name == host_abi():
        if shutil.which("g++") is None:
            raise UserInputError("g++ is not installed; the native runner needs it (apt-get install g++)")
        return "g++"
    if shutil.which(abi.cross_compiler) is None:
        raise UserInputError(f"{abi.cross_compiler} is not installed; the {abi.name} runner needs it "
                             f"(apt-get install {abi.cross_package})")
    return abi.cross_compiler


# ---------------------------------------------------------------- the executorch wheel of an ABI

def _wheel_root(abi: Abi, version: str) -> Path:
    """A folder with executorch/include and executorch/lib for `abi`: the installed package for the host, else the
    extracted subset of the downloaded wheel (cached; the ~18 MB wheel itself is not kept)."""
    if abi.name == host_abi():
        import executorch  # a namespace package: no __file__, one __path__ entry
        pkg = Path(list(executorch.__path__)[0])
        if (pkg / "lib" / "libexecutorch.so").is_file():
            return pkg.parent
        raise UserInputError(f"{pkg} has no lib/libexecutorch.so: this executorch install lacks the C++ runtime")
    root = native_home() / "wheels" / f"executorch-{version}-{abi.name}"
    if (root / "executorch" / "lib" / "libexecutorch.so").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".fetch-") as tmp:
        wheel = _download_wheel(abi, version, Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.startswith("executorch/include/") or (member.startswith("executorch/lib/")
                                                                and member.endswith(".so")):
                    z.extract(member, Path(tmp) / "x")
        _install_dir(Path(tmp) / "x", root)
    return root


def _download_wheel(abi: Abi, version: str, dest: Path) -> Path:
    argv = [sys.executable, "-m", "pip", "download", f"executorch=={version}", "--platform", abi.wheel_platform,
            "--only-binary=:all:", "--no-deps", "--quiet", "-d", str(dest)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"downloading the {abi.name} executorch wheel timed out (900 s)") from None
    wheels = sorted(dest.glob("executorch-*.whl"))
    if p.returncode != 0 or not wheels:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeFailure(f"could not download the {abi.name} executorch {version} wheel ({last}); run "
                             f"`pip download executorch=={version} --platform {abi.wheel_platform} "
                             f"--only-binary=:all: --no-deps` where there is network")
    return wheels[0]


def _install_dir(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- build

def protocol_version() -> int:
    """The Python agent's AGENT_VERSION, read from its source (importing it would run its module-level setup): the
    native runner reports the same agent_version, and a protocol bump changes the build key, so it rebuilds."""
    import importlib.util
    import re
    text = Path(importlib.util.find_spec("edgecompress.device.agent").origin).read_text()
    m = re.search(r"^AGENT_VERSION = (\d+)", text, re.M)
    if m is None:
        raise RuntimeFailure("edgecompress/device/agent.py defines no AGENT_VERSION")
    return int(m.group(1))


def _compile_argv(cxx: str, wheel: Path, out: Path, version: str) -> list[str]:
    pkg = wheel / "executorch"
    inc = pkg / "include"
    # The definitions are those executorch-config.cmake prescribes: the vendored c10 headers need the first, and
    # the libraries are compiled with the event tracer on (class layouts differ without it).
    return [cxx, "-std=c++17", "-O2", "-s", "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_EVENT_TRACER_ENABLED",
            "-DET_USE_THREADPOOL", f'-DEDGECOMPRESS_ET_VERSION="{version}"',
            f"-DEDGECOMPRESS_PROTOCOL_VERSION={protocol_version()}",
            "-isystem", str(inc), "-isystem", str(inc / "executorch" / "runtime" / "core" / "portable_type" / "c10"),
            str(sources_dir() / "pte_runner.cpp"), "-o", str(out), "-L", str(pkg / "lib"),
            "-Wl,--no-as-needed", *[f"-l{lib}" for lib in ET_LIBS], "-Wl,--as-needed", "-Wl,-rpath,$ORIGIN"]


def build_key(abi: Abi, version: str) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (sources_dir() / name).read_bytes())
    h.update(" ".join(_compile_argv("CXX", Path("/W"), Path("/O"), version)).encode())
    return f"executorch-{version}-{abi.name}-{h.hexdigest()[:12]}"


def _toolchain_file(cxx: str, name: str) -> Path:
    """A library of the compiler's own sysroot (`g++ -print-file-name`); it prints the bare name when it has none."""
    out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(out) or not os.path.isfile(out):
        raise RuntimeFailure(f"{cxx} has no {name} in its sysroot; the bundle cannot be made self-contained")
    return Path(out).resolve()


def _write_launcher(folder: Path, abi: Abi) -> None:
    # POSIX sh only (Android's toybox sh): the folder comes from $0, so the bundle runs from any working directory;
    # transports do not all keep the executable bit, so the loader gets it back here.
    (folder / LAUNCHER).write_text(
        "#!/bin/sh\n"
        "# edgecompress native runner: the bundled glibc loader runs pte_runner against the libraries beside it,\n"
        "# so the device needs no glibc of its own and no sysroot.\n"
        'case "$0" in */*) d="${0%/*}" ;; *) d=. ;; esac\n'
        f'[ -x "$d/{abi.loader}" ] || chmod +x "$d/{abi.loader}" 2>/dev/null\n'
        f'exec "$d/{abi.loader}" --library-path "$d" "$d/{RUNNER}" "$@"\n')
    os.chmod(folder / LAUNCHER, 0o755)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile_into(folder: Path, abi: Abi, version: str) -> dict:
    """Compile and assemble the bundle in `folder`; returns the build record."""
    cxx = compiler_for(abi)
    t0 = time.perf_counter()
    wheel = _wheel_root(abi, version)
    fetch_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    p = subprocess.run(_compile_argv(cxx, wheel, folder / RUNNER, version), capture_output=True, text=True,
                       timeout=900)
    if p.returncode != 0:
        errors = [ln for ln in p.stderr.splitlines() if "error" in ln] or p.stderr.strip().splitlines() or ["?"]
        raise RuntimeFailure(f"compiling the {abi.name} native runner failed: {errors[0][:300]}")
    compile_s = time.perf_counter() - t1
    for lib in ET_LIBS:
        shutil.copy2(wheel / "executorch" / "lib" / f"lib{lib}.so", folder / f"lib{lib}.so")
    for name in (abi.loader, *SYSTEM_LIBS):
        shutil.copy(_toolchain_file(cxx, name), folder / name)  # the real file under its soname
    os.chmod(folder / abi.loader, 0o755)
    _write_launcher(folder, abi)
    files = {f.name: _sha256(f) for f in sorted(folder.iterdir()) if f.is_file()}
    size = sum((folder / n).stat().st_size for n in files)
    version_line = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"executorch": version, "abi": abi.name, "compiler": version_line, "loader": abi.loader,
            "fetch_s": round(fetch_s, 2), "compile_s": round(compile_s, 2),
            "build_s": round(time.perf_counter() - t0, 2),
            "runner_kb": round((folder / RUNNER).stat().st_size / 1024, 1),
            "bundle_mb": round(size / 2 ** 20, 2), "files": files}


def build_runner(abi: Optional[str] = None) -> Path:
    """The bundle folder of the native ExecuTorch runner for `abi` (default: this host's), built once and cached.

    Raises UserInputError when a compiler or executorch is missing (the message names what to install) and
    RuntimeFailure when a download or the compile fails."""
    a = resolve_abi(abi)
    version = executorch_version()
    cxx = compiler_for(a)  # checked before anything is downloaded
    final = native_home() / build_key(a, version)
    if (final / RECORD).is_file():
        problem = bundle_problem(final)
        if problem is None:
            try:
                os.utime(final / RECORD)  # last used: what prune_builds keeps
            except OSError:
                pass
            return final
        # CI caches this folder between jobs: an edited or truncated bundle is rebuilt, never pushed and run.
        from edgecompress.progress import stream
        print(f"native runner cache {final}: {problem}; rebuilding it", file=stream(), flush=True)
        _discard(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".build-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the bundle is pushed and read as a normal folder
    try:
        record = _compile_into(tmp, a, version)
        record["compiler_cmd"] = cxx
        (tmp / RECORD).write_text(json.dumps(record, indent=2))
        _install_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune_builds(a.name)
    return final


def bundle_problem(bundle: Path) -> Optional[str]:
    """None when the bundle folder holds exactly the files its build.json lists, each matching its sha256; else a
    one-phrase reason."""
    try:
        listed = json.loads((Path(bundle) / RECORD).read_text())["files"]
        if not isinstance(listed, dict) or not listed:
            return f"{RECORD} lists no files"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{RECORD} is unreadable"
    present = {f.name for f in Path(bundle).iterdir() if f.name != RECORD}
    extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
    if extra or missing:
        return f"{(extra or missing)[0]} is {'not listed in' if extra else 'missing, yet listed in'} {RECORD}"
    for name, digest in sorted(listed.items()):
        f = Path(bundle) / name
        if f.is_symlink() or not f.is_file() or _sha256(f) != digest:
            return f"{name} does not match its sha256 in {RECORD}"
    return None


def _discard(folder: Path) -> None:
    """Move a bad build out of its key (atomically: a concurrent process sees it gone, not half-deleted), then delete
    it. Another process may have discarded it already."""
    aside = folder.with_name(f".bad-{os.getpid()}-{folder.name}")
    try:
        os.rename(folder, aside)
    except OSError:
        if folder.exists():
            raise
        return
    shutil.rmtree(aside, ignore_errors=True)


def prune_builds(abi_name: str, keep: int = KEEP_BUILDS) -> list[Path]:
    """Delete all but the `keep` most recently used runner builds for one ABI (each ~20 MB; a new executorch version
    or runner source makes a new one). Two stay, so switching between two checkouts does not rebuild each time.
    Returns what was deleted."""
    builds = [d for d in native_home().glob(f"executorch-*-{abi_name}-*") if (d / RECORD).is_file()]
    builds.sort(key=lambda d: (d / RECORD).stat().st_mtime, reverse=True)
    for old in builds[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return builds[keep:]


def build_record(bundle: Path) -> dict:
    return json.loads((Path(bundle) / RECORD).read_text())


def bundle_files(bundle: Path, dest: str = "native") -> list[tuple[Path, str]]:
    """(local path, path on the device) of every file to push: the files build.json lists (build_runner checked
    their hashes), under `dest`."""
    return [(Path(bundle) / name, f"{dest}/{name}") for name in sorted(build_record(bundle)["files"])]


def launch_argv(bundle: str, abi: Optional[str] = None, emulator: Sequence[str] = ()) -> list[str]:
    """The command that starts the runner in `bundle` (a folder path as the device sees it); the protocol's
    arguments (AgentRequest.argv()) follow it. With an `emulator` prefix (a transport's, e.g. qemu-aarch64-static
    -cpu cortex-a72) the bundled loader is started under user-mode emulation directly: no binfmt_misc, no -L
    sysroot."""
    if not emulator:
        return ["sh", f"{bundle}/{LAUNCHER}"]
    loader = resolve_abi(abi).loader
    return [*emulator, f"{bundle}/{loader}", "--library-path", bundle, f"{bundle}/{RUNNER}"]
