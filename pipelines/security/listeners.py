"""Which sockets the embedded platform listens on: everything `sluice up` starts must bind loopback.

Every service runs in a session of its own with a pid file under `<state_dir>/logs/`
(processes.py). A service's processes are its session (whatever it started, re-parented or not) and
its descendants (the stand-in's runtime pods share its process group). Their listening TCP sockets
and bound UDP sockets are listed with psutil; any address that is not loopback (0.0.0.0, ::, a LAN
address) is reachable from the network.

    python -m pipelines.security.listeners      # exit 1 when something listens beyond loopback
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.config import Settings, load_settings


@dataclass(frozen=True)
class Listener:
    service: str  # the pid file's name: localstack, mlflow, prometheus, runner, standin, ...
    pid: int
    cmdline: tuple[str, ...]
    protocol: str  # "tcp" or "udp"
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def option(self, name: str) -> str | None:
        """The value of `--name VALUE` or `--name=VALUE` in the process's command line."""
        for i, arg in enumerate(self.cmdline):
            if arg == name and i + 1 < len(self.cmdline):
                return self.cmdline[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return None

    def describe(self) -> str:
        cmd = " ".join(self.cmdline)[:140]
        return f"{self.service} pid {self.pid} listens on {self.protocol} {self.address}:{self.port} ({cmd})"


def _session_members(leader: int) -> Iterator[Any]:
    import psutil

    for proc in psutil.process_iter():
        try:
            if proc.pid != leader and os.getsid(proc.pid) == leader:
                yield proc
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue


def service_processes(settings: Settings) -> dict[str, list[Any]]:
    """{service: [psutil.Process, ...]} for every live pid file under the logs dir."""
    import psutil

    found: dict[str, list[Any]] = {}
    for pid_path in sorted(settings.logs_dir.glob("*.pid")):
        try:
            leader = psutil.Process(int(pid_path.read_text().strip()))
            members = {leader.pid: leader}
            members |= {p.pid: p for p in leader.children(recursive=True)}
            members |= {p.pid: p for p in _session_members(leader.pid)}
        except (ValueError, OSError, psutil.Error):
            continue  # a stale pid file: that service is not running
        found[pid_path.stem] = list(members.values())
    return found


def platform_listeners(settings: Settings) -> list[Listener]:
    """Every listening TCP socket and bound UDP socket of the platform's processes."""
    import psutil

    out: list[Listener] = []
    for service, procs in service_processes(settings).items():
        for proc in procs:
            try:
                connections = getattr(proc, "net_connections", proc.connections)(kind="inet")
                cmdline = tuple(proc.cmdline())
            except psutil.Error:
                continue  # exited meanwhile
            for c in connections:
                if not c.laddr or c.raddr:
                    continue  # not bound, or a connected socket (a client end)
                tcp = c.type == socket.SOCK_STREAM
                if tcp and c.status != psutil.CONN_LISTEN:
                    continue
                out.append(Listener(service, proc.pid, cmdline, "tcp" if tcp else "udp", c.laddr.ip, c.laddr.port))
    return sorted(set(out), key=lambda listener: (listener.service, listener.pid, listener.port))


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    settings = load_settings()
    found = platform_listeners(settings)
    exposed = [listener for listener in found if not listener.loopback]
    for listener in found:
        print(listener.describe() + ("" if listener.loopback else "  <- NOT LOOPBACK"))
    print(f"{len(found)} listeners, {len(exposed)} beyond loopback")
    if not found:
        print(f"nothing found: is the platform up (pid files in {settings.logs_dir})?")
    return 1 if exposed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
