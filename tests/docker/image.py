"""The test image that runs this checkout's vLLM CPU build in a container, made from this machine
(no registry, no pull): a root filesystem holding the Python installation the venv is based on
and the shared libraries it and the venv's extension modules link, imported with `docker import`.

The venv itself is not in the image: a container mounts it read-only at /opt/venv (a spec says
`docker: {volumes: ["<sys.prefix>:/opt/venv:ro"]}`, see `venv_volume()`). The venv's python is a
symlink to the base python at its absolute path, so the image keeps that path. Called by the
`cpu_engine_image` fixture in tests/docker/conftest.py.

The recipe:
- `sys.base_prefix`: bin/python3.11 (and its python3 link), lib/libpython*, the stdlib without
  site-packages, config-*, test suites, idlelib, tkinter, turtledemo, ensurepip, and lib-dynload
  without _tkinter (which would drag in Tk and X11);
- every library `ldd` resolves outside the venv for that python, libpython, the lib-dynload
  modules, every .so under the venv's site-packages, and two tools vLLM's CPU build shells out to
  (`/bin/sh -c "lscpu --json ..."` to learn the CPU topology); with every symlink on their paths
  (Debian's /lib -> usr/lib, /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...);
- /etc/passwd, /etc/group, /etc/nsswitch.conf, /etc/hosts; /tmp (1777), /root;
  /usr/local/bin/python3 -> the base python;
- `ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin`, `ENV HOME=/root`, `WORKDIR /root`.

No compiler: torch.compile (inductor) cannot build kernels in it; run the engine with
--enforce-eager. Console scripts in the venv carry the host path of its python in their shebang;
run modules (`python3 -m ...`) instead.

The tag is `enova-test/vllm-cpu:<key>`, the key a hash of the recipe version, the Python version,
the base prefix and every file of the root filesystem with its size, so a changed library or
stdlib makes a new image and an unchanged machine reuses the one it built.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import docker

RECIPE_VERSION = "1"
REPOSITORY = "enova-test/vllm-cpu"
VENV_TARGET = "/opt/venv"
IMAGE_PATH = "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"

STDLIB_EXCLUDED = {"site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip"}
DYNLOAD_EXCLUDED = ("_tkinter",)
TOOLS = ("/bin/sh", "/usr/bin/lscpu")   # vLLM CPU runs `lscpu --json ...` through a shell

ETC = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    "/etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    "/etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
EMPTY_DIRS = {"/tmp": 0o1777, "/root": 0o700, "/proc": 0o755, "/sys": 0o755, "/dev": 0o755,
              "/etc": 0o755, "/opt": 0o755, "/usr/local/bin": 0o755}


def venv_volume() -> str:
    """The spec's `docker.volumes` entry that mounts this venv where the image expects it."""
    return f"{sys.prefix}:{VENV_TARGET}:ro"


@dataclass
class Rootfs:
    """What the image holds: host files and symlinks at their own paths, directories, and small
    generated files. Built by `rootfs_manifest()`; pure data apart from reading the host."""
    files: dict[str, str] = field(default_factory=dict)      # image path -> host path (a regular file)
    links: dict[str, str] = field(default_factory=dict)      # image path -> link target
    dirs: dict[str, int] = field(default_factory=dict)       # image path -> mode
    generated: dict[str, bytes] = field(default_factory=dict)
    libraries: list[str] = field(default_factory=list)       # what ldd found, for the log

    def add_host_path(self, path: str) -> None:
        """Add `path` as the host has it: every symlink met on the way (recorded, then followed),
        every directory above it, and the file (or directory entry) at its end."""
        parts = PurePosixPath(path).parts[1:]
        cur = PurePosixPath("/")
        for i, part in enumerate(parts):
            nxt = cur / part
            info = os.lstat(nxt)
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(nxt)
                self.links[str(nxt)] = target
                resolved = PurePosixPath(os.path.normpath(cur / target))
                rest = parts[i + 1:]
                self.add_host_path(str(resolved.joinpath(*rest)) if rest else str(resolved))
                return
            if stat.S_ISDIR(info.st_mode):
                self.dirs.setdefault(str(nxt), stat.S_IMODE(info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                self.files[str(nxt)] = str(nxt)
            cur = nxt

    def add_parents(self) -> None:
        """Every folder above an entry, as an entry of its own (0755 unless known)."""
        for image_path in [*self.dirs, *self.links, *self.files, *self.generated]:
            for parent in PurePosixPath(image_path).parents:
                if str(parent) != "/":
                    self.dirs.setdefault(str(parent), 0o755)

    def manifest(self) -> list[tuple[str, str]]:
        """Every entry with what identifies its content (size, link target, mode), sorted."""
        rows = [(p, f"file {os.path.getsize(h)}") for p, h in self.files.items()]
        rows += [(p, f"link {t}") for p, t in self.links.items()]
        rows += [(p, f"dir {m:o}") for p, m in self.dirs.items()]
        rows += [(p, "data " + hashlib.sha256(d).hexdigest()) for p, d in self.generated.items()]
        return sorted(rows)

    def key(self) -> str:
        digest = hashlib.sha256()
        for line in (RECIPE_VERSION, sys.version, sys.base_prefix, *(f"{p} {w}" for p, w in self.manifest())):
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()[:16]

    def write_tar(self, path: Path) -> None:
        """A tar of the root filesystem, parents before children, everything owned by root."""
        entries = sorted([(p, "dir") for p in self.dirs] + [(p, "link") for p in self.links]
                         + [(p, "file") for p in self.files] + [(p, "data") for p in self.generated])
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for image_path, kind in entries:
                info = tarfile.TarInfo(image_path.lstrip("/"))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = int(time.time()) if kind == "data" else 0
                if kind == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, self.dirs[image_path]
                    tar.addfile(info)
                elif kind == "link":
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, self.links[image_path], 0o777
                    tar.addfile(info)
                elif kind == "data":
                    data = self.generated[image_path]
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
                else:
                    host = self.files[image_path]
                    st = os.stat(host)
                    info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), int(st.st_mtime)
                    with open(host, "rb") as fh:
                        tar.addfile(info, fh)


def _stdlib_files(stdlib: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_EXCLUDED and not d.startswith("config-"))
        for name in sorted(files):
            if Path(root).name == "lib-dynload" and name.startswith(DYNLOAD_EXCLUDED):
                continue
            out.append(os.path.join(root, name))
    return out


def _shared_objects(tree: Path) -> list[str]:
    return sorted(str(p) for p in tree.rglob("*.so*") if p.is_file() and not p.is_symlink()
                  and (p.suffix == ".so" or ".so." in p.name))


def linked_libraries(binaries: list[str], exclude_prefix: str) -> list[str]:
    """Every library `ldd` resolves for `binaries` (and the dynamic loader), outside
    `exclude_prefix`; libraries it cannot find are left out (they are the venv's own, found
    through their RPATH at run time). Blocks for a few seconds on a venv with vLLM."""
    found: set[str] = set()
    for start in range(0, len(binaries), 200):
        proc = subprocess.run(["ldd", *binaries[start:start + 200]], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            line = line.strip()
            name, arrow, rest = line.partition("=>")
            target = (rest if arrow else name).split(" (", 1)[0].strip()
            if not (target.startswith("/") and os.path.exists(target)):
                continue
            found.add(target)
            # the name the loader will look for, when the path ldd shows is another name for it
            alias = os.path.join(os.path.dirname(target), name.strip())
            if arrow and "/" not in name and alias != target and os.path.exists(alias):
                found.add(alias)
    prefix = exclude_prefix.rstrip("/") + "/"
    return sorted(p for p in found if not p.startswith(prefix) and not os.path.realpath(p).startswith(prefix))


def rootfs_manifest() -> Rootfs:
    """The root filesystem for this interpreter and venv (see the module docstring)."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = base / "lib" / version
    python = base / "bin" / version
    site_packages = Path(sysconfig.get_paths()["purelib"])
    fs = Rootfs()
    for path, mode in EMPTY_DIRS.items():
        fs.dirs[path] = mode
    for path, text in ETC.items():
        fs.generated[path] = text.encode()
    fs.add_host_path(str(python))
    for alias in ("python3", "python"):
        if (base / "bin" / alias).exists():
            fs.add_host_path(str(base / "bin" / alias))
    fs.links["/usr/local/bin/python3"] = str(python)
    libpythons = sorted(str(p) for p in (base / "lib").glob("libpython*"))
    for path in libpythons + _stdlib_files(stdlib):
        fs.add_host_path(path)
    for tool in TOOLS:
        if os.path.exists(tool):
            fs.add_host_path(tool)
    dynload = [p for p in fs.files if p.startswith(str(stdlib / "lib-dynload") + "/") and ".so" in p]
    tools = [os.path.realpath(t) for t in TOOLS if os.path.exists(t)]
    fs.libraries = linked_libraries([str(python), *libpythons, *dynload, *tools,
                                     *_shared_objects(site_packages)], exclude_prefix=sys.prefix)
    for lib in fs.libraries:
        fs.add_host_path(lib)
    fs.add_parents()
    return fs


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    cached: bool
    seconds: float        # the whole fixture's work: manifest, and tar + import when not cached
    size_bytes: int
    libraries: tuple[str, ...]


def ensure_image(client: docker.DockerClient, workdir: Path) -> BuiltImage:
    """The tag of the test image for this machine's Python and venv in `client`'s engine, built
    now unless an image with that tag exists. Blocks (seconds: ldd, a 100 MB tar, the import); raises
    RuntimeError when the import fails."""
    started = time.monotonic()
    fs = rootfs_manifest()
    tag = f"{REPOSITORY}:{fs.key()}"
    cached = bool(client.images.list(name=tag))
    if not cached:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            tar_path = Path(tmp) / "rootfs.tar"
            fs.write_tar(tar_path)
            changes = [f"ENV PATH={IMAGE_PATH}", "ENV HOME=/root", "ENV LANG=C.UTF-8", "WORKDIR /root",
                       'CMD ["python3"]']
            repository, _, key = tag.partition(":")
            out = client.api.import_image(src=str(tar_path), repository=repository, tag=key, changes=changes)
        if "error" in str(out).lower() or not client.images.list(name=tag):
            raise RuntimeError(f"docker import of {tag} failed: {out}")
    image = client.images.get(tag)
    return BuiltImage(tag=tag, cached=cached, seconds=time.monotonic() - started,
                      size_bytes=int(image.attrs.get("Size") or 0), libraries=tuple(fs.libraries))
