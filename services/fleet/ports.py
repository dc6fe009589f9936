"""Ports on this machine: a free one, whether one is taken, and who holds it (for the launcher's
"ports already in use" error).

Separate from ``launcher.py``: probing sockets and /proc is a concern of its own, and tests use
``free_port`` without starting anything.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import grpc

from services.fleet.catalog import LOCALHOST
from services.runtime.healthcheck import status_sync


def free_port(host: str = LOCALHOST) -> int:
    """A port free right now (another process may take it before it is used: tests only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """True when something listens on ``port``.

    A bind probe (SO_REUSEADDR, no SO_REUSEPORT: with it a second gRPC server would start on
    the same port and the health check could be answered by the old one) passes over a free
    port at once. When it fails, the port may only hold the TIME-WAIT leftovers of a fleet that
    just stopped, which do not stop a new server from binding: only a listener that accepts a
    connection (or is too busy to answer: a closed local port refuses at once) counts.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            pass
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except ConnectionRefusedError:
        return False
    except OSError:
        return True  # no answer in time: a listener with a full backlog
    return True


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port``, from /proc/net/tcp and tcp6 (Linux)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; inode is the 10th field.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> str:
    """Who listens on ``port``, as far as this user can see: "another Parole fleet" when a
    health service answers there, the process id and command line from /proc, or "".
    """
    with grpc.insecure_channel(f"{LOCALHOST}:{port}") as channel:
        try:
            status_sync(channel, timeout=0.5)
            parole = True
        except grpc.RpcError:
            parole = False
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    owners: list[str] = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # processes come and go; others' fds are not ours to read
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                owners.append(f"pid {proc.name}: {command[:80]}")
    who = ("another Parole fleet, " if parole else "") + "; ".join(owners)
    return who.rstrip(", ")
