"""Podman for the deployment tests: its configuration, a local Debian base image, images built from the Dockerfile.

No container registry is reachable where these tests run, so nothing is
pulled: the base image is a Debian made with ``debootstrap`` and imported
(``localhost/switchyard-base:bookworm``, cached between runs), the Dockerfile
is built on it with ``--build-arg BASE=...``, and Redis for the compose test is
Debian's ``redis-server`` on the same base. Podman runs with ``runc`` and
cgroupfs from a ``containers.conf`` of our own (``CONTAINERS_CONF``): crun and
the default nofile ulimit are refused on these machines, and there is no
systemd. Images are built with chroot isolation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/switchyard-base:bookworm"
IMAGE = "localhost/switchyard:test"
REDIS_IMAGE = "localhost/switchyard-test-redis:bookworm"
REDIS_CONTAINERFILE = Path(__file__).with_name("redis.Containerfile")
DEBIAN_SUITE = "bookworm"

CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

# Trust stores a build may need to give pip (behind a TLS-inspecting proxy), first found wins.
_CA_BUNDLE_ENV = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_CA_BUNDLE_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/switchyard-ci`` (``~/.cache/switchyard-ci``): the Debian base's tarball and our config."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "switchyard-ci"


def missing_tools() -> str | None:
    """Why these tests cannot run here, or None."""
    absent = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not installed (apt-get install podman buildah runc debootstrap; see .ci/run)"
    if os.geteuid() != 0:
        return "podman runs rootful here (the local base image comes from debootstrap): run as root"
    return None


class CommandFailed(AssertionError):
    """A podman (or build) command exited non-zero; the message quotes its output's tail."""


@dataclass(frozen=True)
class Built:
    """An image and how long making it took (0 when it was there already)."""

    name: str
    seconds: float


class Podman:
    """Runs ``podman`` (and tools that call it, like podman-compose) with our containers.conf."""

    def __init__(self, config_dir: Path | None = None) -> None:
        self.config_dir = config_dir or cache_dir()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.config_dir / "containers.conf"
        if not self.conf.is_file() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self,
        *args: str,
        timeout_s: float = 120,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        program: Sequence[str] = ("podman",),
    ) -> subprocess.CompletedProcess[str]:
        """``podman ARGS`` (or ``program ARGS``); CommandFailed with its output when ``check`` and it fails."""
        command = [*program, *args]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**self.env, **(env or {})},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr)[-6000:]
            raise CommandFailed(f"{' '.join(command)} exited with {result.returncode}:\n{output}")
        return result

    def image_exists(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0

    def logs(self, container: str, tail: int = 60) -> str:
        result = self.run("logs", "--tail", str(tail), container, check=False)
        return result.stdout + result.stderr

    # -- images --------------------------------------------------------------

    def ensure_base_image(self) -> Built:
        """``BASE_IMAGE``: a minimal Debian from debootstrap, imported; its tarball is cached, the image kept."""
        if self.image_exists(BASE_IMAGE):
            return Built(BASE_IMAGE, 0.0)
        started = time.monotonic()
        tarball = self.config_dir / f"debian-{DEBIAN_SUITE}-minbase.tar"
        if not tarball.is_file():
            if shutil.which("debootstrap") is None:
                raise CommandFailed(f"{BASE_IMAGE} is missing and debootstrap is not installed (apt-get install it)")
            rootfs = self.config_dir / "rootfs.partial"
            shutil.rmtree(rootfs, ignore_errors=True)
            self.run("--variant=minbase", DEBIAN_SUITE, str(rootfs), program=("debootstrap",), timeout_s=900)
            # The downloaded packages and indexes would only make every image larger.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = tarball.with_suffix(".partial")
            self.run("-C", str(rootfs), "-cf", str(partial), ".", program=("tar",), timeout_s=300)
            partial.rename(tarball)
            shutil.rmtree(rootfs, ignore_errors=True)
        self.run("import", str(tarball), BASE_IMAGE, timeout_s=300)
        return Built(BASE_IMAGE, time.monotonic() - started)

    def build(self, tag: str, containerfile: Path, context: Path, *, build_args: Mapping[str, str]) -> Built:
        """``podman build`` (chroot isolation, cached layers); the host's CA bundle goes in as a build secret."""
        args = ["build", "--isolation", "chroot", "--layers", "-t", tag, "-f", str(containerfile)]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        bundle = host_ca_bundle()
        if bundle is not None:
            args += ["--secret", f"id=ca-certificates,src={bundle}"]
        started = time.monotonic()
        self.run(*args, str(context), timeout_s=1800)
        return Built(tag, time.monotonic() - started)

    def image_size_mb(self, name: str) -> float:
        size = self.run("image", "inspect", "--format", "{{.Size}}", name).stdout.strip()
        return int(size) / 1e6


def host_ca_bundle() -> Path | None:
    """The CA bundle this host trusts (for pip inside a build), if one is found."""
    for variable in _CA_BUNDLE_ENV:
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    for candidate in _CA_BUNDLE_FILES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def established_connections(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` that are ESTABLISHED on local ``port`` (read in its network namespace)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return sum(
        1
        for fields in _tcp_table(pid)
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes
    )


def _tcp_table(pid: int) -> list[list[str]]:
    """The rows of /proc/PID/net/tcp and tcp6 (the network namespace of ``pid``)."""
    rows = []
    for table in ("tcp", "tcp6"):
        try:
            rows += [line.split() for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]]
        except OSError:
            continue
    return rows


def _ipv4(address: str) -> str:
    """The IPv4 address of a /proc/net/tcp{,6} address (IPv4-mapped in tcp6), from its little-endian hex."""
    word = address[-8:]
    return ".".join(str(int(word[i : i + 2], 16)) for i in (6, 4, 2, 0))


def peers(pid: int, remote_port: int) -> list[str]:
    """IPv4 addresses that the network namespace of ``pid`` holds ESTABLISHED connections to on ``remote_port``."""
    found = []
    for fields in _tcp_table(pid):
        address, port = fields[2].rsplit(":", 1)
        if fields[3] == "01" and int(port, 16) == remote_port:
            found.append(_ipv4(address))
    return found


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []
