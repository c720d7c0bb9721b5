"""A private Docker engine for the tests: installs `dockerd` when missing, starts it as root with its
own data root, exec root, pidfile, socket and bridge, and afterwards stops it and leaves the host as
it found it. Used by the `docker_engine` fixture in tests/docker/conftest.py.

What it does to the host, and why:
- Its own bridge, `enova-test0`, on the first free subnet of SUBNETS, not docker0: two engines
  sharing docker0 hand out the same addresses from 172.17.0.0/16, and the machine may run another
  dockerd (a developer's, an experiment).
- `--iptables=false --ip-forward=false`: a dockerd that manages iptables flushes the DOCKER and
  DOCKER-ISOLATION chains when it starts, and those chains are shared by every engine on the host
  (seen here: starting a second engine wiped the first one's docker0 rules). Without them published
  ports still work from the host, through docker-proxy (which is what a connection to 127.0.0.1
  uses with iptables on, too); containers get no route out, which an offline test needs no more
  than it has. Where br_netfilter sends bridged packets through a FORWARD chain whose policy
  another engine set to DROP, one rule of ours lets containers on our bridge reach each other.
- Teardown removes every iptables rule naming our bridge or subnet and the bridge itself. When no
  dockerd runs any more it also removes what engines share and a dead one left behind: the
  DOCKER, DOCKER-USER, DOCKER-ISOLATION-STAGE-1/2 chains (filter) and DOCKER (nat) with the jumps
  to them, rules naming docker0, the docker0 bridge, and empty /run/containerd folders.

One test engine at a time on a machine: a session holds a file lock while its engine runs (another
session waits, then skips). The data root persists between runs (`~/.cache/enova/test-docker/data`,
or `$ENOVA_TEST_DOCKER_ROOT`) so images built once are reused. An engine a crashed session left
running is recognised by its pidfile and command line and stopped before a new one starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import filelock
import psutil

RUN_DIR = Path("/tmp/enova-test-dockerd")
BRIDGE = "enova-test0"
SUBNETS = ("172.29.231.1/24", "10.231.77.1/24", "192.168.231.1/24")   # the first free one is used
DOCKER_CHAINS = {"filter": ("DOCKER", "DOCKER-USER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"),
                 "nat": ("DOCKER",)}
TEST_LABEL = "io.enova.test"                                # on every container a test creates itself
OWNED_LABELS = ("io.enova.managed-by=enova", TEST_LABEL)   # what teardown removes
LOCK_WAIT_S = 900.0
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Unavailable(Exception):
    """This machine cannot give the tests a Docker engine; the message says why (the tests skip)."""


def default_data_root() -> Path:
    env = os.environ.get("ENOVA_TEST_DOCKER_ROOT")
    return Path(env) if env else Path.home() / ".cache" / "enova" / "test-docker" / "data"


def _env() -> dict[str, str]:
    """The environment for dockerd and the host tools: the sbin folders on PATH, where ip,
    iptables, containerd, runc and docker-proxy live."""
    folders = [*os.environ.get("PATH", "").split(":"), *SBIN_PATH.split(":")]
    return {**os.environ, "PATH": ":".join(f for f in dict.fromkeys(folders) if f)}


def _run(*argv: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, env=_env())


def ensure_dockerd() -> str:
    """The path of `dockerd`, installing Debian's docker.io first when it is missing. Blocks for
    the install (a minute); raises Unavailable when not root or when apt-get fails."""
    found = shutil.which("dockerd", path=_env()["PATH"])
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get", path=_env()["PATH"]):
        raise Unavailable("dockerd is not installed and cannot be installed here (needs root and apt-get)")
    env = {**_env(), "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "docker.io"]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise Unavailable(f"dockerd is missing and `{' '.join(argv)}` failed ({proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    found = shutil.which("dockerd", path=_env()["PATH"])
    if not found:
        raise Unavailable("apt-get installed docker.io but there is no dockerd")
    return found


def _dockerds() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "dockerd"]


def _stop_process(proc: psutil.Process, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Idempotent."""
    try:
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    except psutil.NoSuchProcess:
        pass


def _within(address: str, subnets: list) -> bool:
    try:
        net = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return False
    return any(net.version == s.version and net.subnet_of(s) for s in subnets)


@dataclass
class Dockerd:
    """One private dockerd. `start()` and `stop()` block; `stop()` is idempotent and also cleans
    up after an engine with the same paths that a crashed session left running."""

    data_root: Path = field(default_factory=default_data_root)
    run_dir: Path = RUN_DIR
    bridge: str = BRIDGE
    notes: list[str] = field(default_factory=list)   # what it did, for the session summary
    _proc: subprocess.Popen | None = None
    _lock: filelock.FileLock | None = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def logfile(self) -> Path:
        return self.run_dir / "dockerd.log"

    def client(self, timeout: float = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    # -- start ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> str:
        """Start the engine and return its URL once it answers a ping. Raises Unavailable when
        dockerd cannot be had or another session holds the test engine too long; RuntimeError
        with the tail of dockerd's log when it does not answer within `timeout`."""
        if os.geteuid() != 0:
            raise Unavailable("dockerd needs root")
        binary = ensure_dockerd()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = filelock.FileLock(str(self.run_dir / "lock"))
        try:
            self._lock.acquire(timeout=LOCK_WAIT_S)
        except filelock.Timeout:
            raise Unavailable(f"another test session has held the test dockerd ({self.run_dir}) "
                              f"for {LOCK_WAIT_S:.0f} s") from None
        try:
            self._clean_up()
            self._make_bridge()
            self.data_root.mkdir(parents=True, exist_ok=True)
            argv = [binary, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                    "--pidfile", str(self.pidfile), "-H", self.url, "--bridge", self.bridge,
                    "--iptables=false", "--ip-forward=false"]
            with open(self.logfile, "wb") as log:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                              env=_env(), start_new_session=True)
            self._wait_ready(timeout)
            self._remove_owned_containers()
            return self.url
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        started = time.monotonic()
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self._proc.returncode} before answering "
                                   f"(log {self.logfile}):\n{self.log_tail()}")
            if self.socket.exists() and self._ping():
                self.notes.append(f"dockerd {self._proc.pid} answered at {self.url} after "
                                  f"{time.monotonic() - started:.1f} s (data root {self.data_root})")
                return
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"dockerd did not answer a ping at {self.url} within {timeout:.0f} s "
                                   f"(log {self.logfile}):\n{self.log_tail()}")
            time.sleep(0.2)

    def _ping(self) -> bool:
        client = self.client(timeout=5)
        try:
            return client.ping()
        except docker.errors.DockerException:
            return False
        finally:
            client.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dockerd log)"

    def _make_bridge(self) -> None:
        used = []
        for kind in ("addr", "route"):
            for entry in json.loads(_run("ip", "-j", "-4", kind).stdout or "[]"):
                for info in entry.get("addr_info", []):
                    used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
                dst = entry.get("dst")
                if dst and dst != "default":
                    used.append(ipaddress.ip_network(dst, strict=False))
        free = [s for s in SUBNETS if not any(ipaddress.ip_network(s, strict=False).overlaps(u) for u in used)]
        if not free:
            raise Unavailable(f"every subnet the test bridge may use is taken: {', '.join(SUBNETS)}")
        _run("ip", "link", "add", self.bridge, "type", "bridge", check=True)
        _run("ip", "addr", "add", free[0], "dev", self.bridge, check=True)
        _run("ip", "link", "set", self.bridge, "up", check=True)
        _run("iptables", "-t", "filter", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Remove the containers the tests own, stop dockerd (SIGTERM, wait `timeout`, SIGKILL)
        and what it started, unmount what it left, and undo what it changed on the host.
        Idempotent; releases the lock."""
        try:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    self._remove_owned_containers()
                except docker.errors.DockerException as exc:
                    self.notes.append(f"could not remove the test containers: {exc}")
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.notes.append(f"dockerd {self._proc.pid} ignored SIGTERM for {timeout:.0f} s; killed")
                    self._proc.kill()
                self.notes.append(f"dockerd {self._proc.pid} stopped (exit {self._proc.wait()})")
            self._clean_up()
        finally:
            if self._lock is not None and self._lock.is_locked:
                self._lock.release()

    def _remove_owned_containers(self) -> None:
        """Containers labelled as enova's or as a test's, running or stopped, and any stopped
        container (this data root is the tests' own, so a stopped one is a test's leftover, such
        as an unlabelled container a test ran); never images or volumes."""
        seen = set()
        client = self.client()
        try:
            wanted = [{"label": label} for label in OWNED_LABELS]
            wanted += [{"status": status} for status in ("created", "exited", "dead")]
            for filters in wanted:
                for container in client.containers.list(all=True, filters=filters):
                    if container.id not in seen:
                        seen.add(container.id)
                        container.remove(force=True)
        finally:
            client.close()
        if seen:
            self.notes.append(f"removed {len(seen)} test container(s)")

    def _clean_up(self) -> None:
        """Stop a dockerd holding our pidfile and every process started under our exec root
        (containerd, shims), unmount what is mounted below our roots, then undo the host changes
        (see the module docstring)."""
        ours = self._pidfile_dockerd()
        if ours is not None:
            self.notes.append(f"stopping dockerd {ours.pid}, left running by an earlier session")
            _stop_process(ours, 30.0)
        marker = str(self.exec_root)
        for proc in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in proc.info["cmdline"] or []):
                _stop_process(proc, 10.0)
        self._unmount_below((self.exec_root, self.data_root))
        self._remove_network(shared=not _dockerds())

    def _pidfile_dockerd(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(int(self.pidfile.read_text().strip()))
            if proc.name() == "dockerd" and str(self.pidfile) in proc.cmdline():
                return proc
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    @staticmethod
    def _unmount_below(roots: tuple[Path, ...]) -> None:
        prefixes = [str(r).rstrip("/") for r in roots]
        points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted(points, key=len, reverse=True):
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                _run("umount", "-l", point)

    def _remove_network(self, shared: bool) -> None:
        """Rules naming our bridge or its subnet, and the bridge; with `shared` (no dockerd
        runs), also the DOCKER chains, the jumps to them, rules naming docker0, and docker0."""
        names = {self.bridge, "docker0"} if shared else {self.bridge}
        addrs = json.loads(_run("ip", "-j", "-4", "addr", "show", "dev", self.bridge).stdout or "[]") \
            if Path("/sys/class/net", self.bridge).exists() else []
        subnets = [ipaddress.ip_network(f"{i['local']}/{i['prefixlen']}", strict=False)
                   for entry in addrs for i in entry.get("addr_info", [])]
        for table, chains in DOCKER_CHAINS.items():
            listing = _run("iptables", "-t", table, "-S").stdout
            for line in listing.splitlines():
                args = shlex.split(line)
                if args[:1] != ["-A"]:
                    continue
                jump = args[args.index("-j") + 1] if "-j" in args else ""
                ifaces = {args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-i", "-o")}
                in_subnet = any(_within(args[i + 1], subnets) for i, a in enumerate(args[:-1]) if a in ("-s", "-d"))
                if ifaces & names or in_subnet or (shared and jump in chains and args[1] not in chains):
                    _run("iptables", "-t", table, "-D", *args[1:])
            if shared:
                present = [c for c in chains if f"-N {c}" in listing.splitlines()]
                for chain in present:
                    _run("iptables", "-t", table, "-F", chain)
                for chain in present:
                    _run("iptables", "-t", table, "-X", chain)
                if present:
                    self.notes.append(f"removed the iptables chains {', '.join(present)} ({table}) "
                                      "that no running dockerd owns")
        for link in sorted(names):
            if Path("/sys/class/net", link).exists():
                _run("ip", "link", "delete", link)
        if shared and not any(p.info["name"] == "containerd" for p in psutil.process_iter(["name"])):
            for folder in ("/run/containerd/s", "/run/containerd"):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
