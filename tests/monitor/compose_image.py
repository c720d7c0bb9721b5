"""A Prometheus image made from this machine's Debian Prometheus (no registry, no pull): the
binary, the libraries `ldd` finds for it and a few /etc files, imported with `docker import` the
way tests/docker/image.py makes the engine's image, with the official image's shape: ENTRYPOINT
the server, so a compose service gives only its arguments (`command:`). Its tag names the
Prometheus version it holds (`enova-test/prometheus:<version>-<key>`), not the pinned one: it
stands in for `prom/prometheus` only where a test says so (ComposeOptions.images).
Called by tests/monitor/test_compose_docker.py.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from tests.docker.image import ETC, Rootfs, linked_libraries

REPOSITORY = "enova-test/prometheus"
BINARY = "/usr/bin/prometheus"


def prometheus_version(binary: str = BINARY) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def ensure_prometheus_image(client, workdir: Path, binary: str = BINARY) -> str:
    """The tag of the Prometheus image in `client`'s engine, imported now unless it exists.
    Raises RuntimeError when the import fails."""
    fs = Rootfs()
    for path, mode in {"/tmp": 0o1777, "/etc": 0o755, "/proc": 0o755, "/sys": 0o755, "/dev": 0o755}.items():
        fs.dirs[path] = mode
    for path, text in ETC.items():
        fs.generated[path] = text.encode()
    fs.add_host_path(binary)
    for lib in linked_libraries([binary], exclude_prefix="/nonexistent"):
        fs.add_host_path(lib)
    fs.add_parents()
    tag = f"{REPOSITORY}:{prometheus_version(binary)}-{fs.key()[:10]}"
    if client.images.list(name=tag):
        return tag
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tar = Path(tmp) / "rootfs.tar"
        fs.write_tar(tar)
        repository, _, key = tag.partition(":")
        out = client.api.import_image(src=str(tar), repository=repository, tag=key,
                                      changes=[f'ENTRYPOINT ["{binary}"]', "WORKDIR /tmp"])
    if not client.images.list(name=tag):
        raise RuntimeError(f"docker import of {tag} failed: {out}")
    return tag
