"""Start and stop throwaway redis-server processes (single servers, Sentinels, Clusters) on
free loopback ports, for the tests and the benchmark (``bench.cluster``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import redis

from testsupport.system import free_port


@dataclass
class RedisServer:
    """One redis-server; ``stop()``/``start()`` again on the same port simulate a restart."""

    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    # Written to a fresh file given first on the command line (Sentinel needs one).
    config: str = ""
    process: subprocess.Popen[bytes] | None = None
    _config_dir: str = ""

    @classmethod
    def sentinel(cls, master: RedisServer, name: str) -> RedisServer:
        """A Sentinel watching ``master`` that fails over half a second after it dies."""
        return cls(
            extra_args=("--sentinel",),
            config=(
                f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds {name} 500\n"
                f"sentinel failover-timeout {name} 2000\n"
            ),
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        config = []
        if self.config:
            self._config_dir = tempfile.mkdtemp(prefix="redis-test-")
            path = os.path.join(self._config_dir, "redis.conf")
            with open(path, "w") as file:
                file.write(self.config)
            config = [path]
        self.process = subprocess.Popen(
            [
                binary,
                *config,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return self
            except redis.AuthenticationError:
                return self  # up, and wants a password
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
        if self._config_dir:
            shutil.rmtree(self._config_dir, ignore_errors=True)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@dataclass
class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas, on free ports,
    its nodes' state in a temporary directory; ``stop()`` kills them and deletes it."""

    masters: int = 3
    replicas: int = 1
    nodes: list[RedisServer] = field(default_factory=list)
    _dir: str = ""

    @property
    def url(self) -> str:
        """Any node's URL: the client finds the others."""
        return self.nodes[0].url

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url)

    def masters_now(self) -> list[RedisServer]:
        """The nodes that are masters at this moment (a failover changes which)."""
        return [
            node
            for node in self.nodes
            if node.process and node.client().info("replication")["role"] == "master"
        ]

    def start(self) -> RedisClusterServers:
        self._dir = tempfile.mkdtemp(prefix="redis-cluster-")
        try:
            bus_ports = []
            for index in range(self.masters * (1 + self.replicas)):
                node_dir = os.path.join(self._dir, str(index))
                os.mkdir(node_dir)
                # Else the bus is on port + 10000, which may be taken or too high.
                bus_ports.append(free_port())
                node = RedisServer(
                    extra_args=(
                        *("--cluster-enabled", "yes", "--dir", node_dir),
                        *("--cluster-config-file", "nodes.conf"),
                        *("--cluster-node-timeout", "2000"),
                        *("--logfile", os.path.join(node_dir, "redis.log")),
                        # Replicas in sync at once (else 5 s), so a master can fail over.
                        *("--repl-diskless-sync-delay", "0"),
                        *("--cluster-port", str(bus_ports[-1])),
                    )
                )
                self.nodes.append(node.start())
            if self.masters >= 3:
                addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
                create = ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"]
                subprocess.run(
                    [*create, "--cluster-replicas", str(self.replicas)],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
            else:
                self._create_by_hand(bus_ports[0])
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _create_by_hand(self, first_bus_port: int, timeout: float = 30) -> None:
        """``redis-cli --cluster create`` refuses fewer than 3 masters: give the masters the
        slots, introduce every node to the first, and make the rest replicas."""
        masters = self.nodes[: self.masters]
        share = 16384 // self.masters
        for index, master in enumerate(masters):
            last = 16383 if index == self.masters - 1 else (index + 1) * share - 1
            master.client().execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        for node in self.nodes[1:]:
            node.client().execute_command(
                "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, first_bus_port
            )
        deadline = time.monotonic() + timeout
        for index, replica in enumerate(self.nodes[self.masters :]):
            master_id = masters[index % self.masters].client().execute_command("CLUSTER", "MYID")
            master_id = master_id.decode() if isinstance(master_id, bytes) else master_id
            # A node can only replicate a master it has heard of.
            while master_id not in str(replica.client().execute_command("CLUSTER", "NODES")):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {replica.port} never heard of {master_id}")
                time.sleep(0.05)
            replica.client().execute_command("CLUSTER", "REPLICATE", master_id)

    def wait_until_ok(self, timeout: float = 30) -> None:
        """Until every node says ``cluster_state:ok`` and knows every node, and every
        replica is in sync with its master (else it could not take over)."""
        deadline = time.monotonic() + timeout
        while True:
            live = [node.client() for node in self.nodes if node.process]
            infos = [client.cluster("info") for client in live]
            links = [client.info("replication").get("master_link_status") for client in live]
            if all(
                info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(infos)
                for info in infos
            ) and all(link in (None, "up") for link in links):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster is not ok after {timeout} s: {infos}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        self.nodes.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
