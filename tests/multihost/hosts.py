"""Three toxiserve hosts on one machine: each in its own network namespace (ip netns, veth, a bridge),
each running the Procfile's web process; one Redis; HAProxy in front on 127.0.0.1, health-checking
/readyz. Everything is created here and removed afterwards; traffic stays on these addresses."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.service.server import REPO_ROOT, free_port, procfile_command

SUBNET = "10.231.{}"  # a /24 of our own, on a bridge of our own: no other host is there


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    for tool in ("ip", "haproxy", "redis-server"):
        if shutil.which(tool) is None:
            return (
                f"{tool} is not installed (.ci/run installs haproxy; iproute2 and redis-server come with the machine)"
            )
    return None


def run(command: str) -> None:
    subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=30)


class Cluster:
    def __init__(self, env: dict[str, str], hosts: int = 3) -> None:
        tag = f"{os.getpid() % 10000}"
        self.net = SUBNET.format(os.getpid() % 200 + 20)
        self.bridge = f"tsbr{tag}"
        self.names = [f"ts{tag}h{i}" for i in range(1, hosts + 1)]
        self.addresses = [f"{self.net}.{10 + i}" for i in range(1, hosts + 1)]
        self.env, self.hosts = env, {}
        self.redis_port, self.lb_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.lb_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="toxiserve-multihost-"))
        self.redis = self.haproxy = None

    # -- network -----------------------------------------------------------------------------------

    def _network(self) -> None:
        run(f"ip link add {self.bridge} type bridge")
        run(f"ip addr add {self.net}.1/24 dev {self.bridge}")
        run(f"ip link set {self.bridge} up")
        for index, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            outside, inside = f"{self.bridge}v{index}", f"{self.bridge}p{index}"
            run(f"ip netns add {name}")
            run(f"ip link add {outside} type veth peer name {inside}")
            run(f"ip link set {inside} netns {name}")
            run(f"ip link set {outside} master {self.bridge} up")
            run(f"ip netns exec {name} ip addr add {address}/24 dev {inside}")
            run(f"ip netns exec {name} ip link set {inside} up")
            run(f"ip netns exec {name} ip link set lo up")

    def _teardown_network(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    # -- processes ---------------------------------------------------------------------------------

    def start_host(self, index: int) -> None:
        name, address = self.names[index], self.addresses[index]
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        env = {
            **os.environ,
            "PORT": "8000",
            "TOXISERVE_BIND_HOST": address,
            "WEB_CONCURRENCY": "2",
            "TOXISERVE_STORE_URL": f"redis://{self.net}.1:{self.redis_port}/0",
            **self.env,
        }
        process = subprocess.Popen(
            ["ip", "netns", "exec", name, *procfile_command()],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a "host" can be killed whole
        )
        self.hosts[index] = process

    def host_ready(self, index: int) -> bool:
        probe = ["ip", "netns", "exec", self.names[index], "curl", "-sf", f"http://{self.addresses[index]}:8000/readyz"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    def _haproxy_config(self) -> Path:
        servers = "\n".join(
            f"  server h{i + 1} {address}:8000 check inter 300ms fall 1 rise 2"
            for i, address in enumerate(self.addresses)
        )
        config = self.dir / "haproxy.cfg"
        config.write_text(
            f"""global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
  # A connection still in a host's accept queue when SIGTERM closes its listener is reset unanswered
  # (seen: one 502 in ten CI-like runs): retried on another host, as docs/operations.md asks of a
  # load balancer. L7 retries need the whole request buffered, which the docs ask for anyway.
  retry-on conn-failure empty-response
  option http-buffer-request
  # one request per server connection: a host that stops accepting is skipped, never half-used
  option http-server-close
frontend toxiserve
  bind 127.0.0.1:{self.lb_port}
  default_backend hosts
backend hosts
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  http-response set-header X-Served-By %s
{servers}
"""
        )
        return config

    def __enter__(self) -> Cluster:
        try:
            self._network()
            self.redis = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    f"{self.net}.1",
                    "--protected-mode",  # bound to our own bridge only; the hosts are not on loopback
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for index in range(len(self.names)):
                self.start_host(index)
            deadline = time.monotonic() + 60
            while not all(self.host_ready(i) for i in self.hosts):
                if time.monotonic() > deadline:
                    raise TimeoutError(self.logs())
                time.sleep(0.2)
            self.haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self._haproxy_config())],
                stdout=open(self.dir / "haproxy.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 20
            while True:
                try:
                    if len({self.get("/readyz").headers.get("X-Served-By") for _ in range(6)}) == len(self.names):
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("HAProxy did not see every host ready")
                time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for process in [*self.hosts.values(), self.haproxy, self.redis]:
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL) if process in self.hosts.values() else process.kill()
                except ProcessLookupError:
                    pass
                process.wait(10)
        self._teardown_network()

    # -- traffic -----------------------------------------------------------------------------------

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10, **kwargs)

    def post(self, path: str, body: dict, key: str, **kwargs) -> requests.Response:
        with requests.Session() as session:  # a fresh connection: HAProxy spreads them
            return session.post(f"{self.url}{path}", json=body, headers={"X-API-Key": key}, timeout=60, **kwargs)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.dir.glob("*.log"))
