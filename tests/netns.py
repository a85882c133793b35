"""Several hosts on one machine: a network namespace per host, each joined to one Linux bridge (iproute2).

The bridge lives in the root namespace and holds the subnet's first address, so the test itself (the
client) reaches every host and each host reaches the test. A host's interface is ``eth0`` inside its
namespace; ``cut``/``rejoin`` take that link down and up, as a pulled cable would.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

PREFIX = "hubmh"  # namespaces hubmh-<host>, the bridge hubmh-br, root-side veths hubmh<n>
SUBNET = ipaddress.ip_network("10.77.231.0/24")  # private, and unlikely to be in use here
BRIDGE = f"{PREFIX}-br"


def available() -> str:
    """Why the topology cannot be built here, or '' when it can."""
    import os

    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


class Topology:
    """Hosts by name, each in namespace ``hubmh-<name>`` with its own address on ``SUBNET``."""

    def __init__(self, hosts: list[str]) -> None:
        addresses = SUBNET.hosts()
        self.client = str(next(addresses))
        self.hosts = {name: str(next(addresses)) for name in hosts}

    @staticmethod
    def namespace(host: str) -> str:
        return f"{PREFIX}-{host}"

    def address(self, host: str) -> str:
        return self.hosts[host]

    def run_in(self, host: str, command: list[str]) -> list[str]:
        """``command`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(host), *command]

    @staticmethod
    def clean() -> None:
        """Remove what a crashed run may have left: our namespaces and our bridge (veths go with them)."""
        listed = _ip("netns", "list", check=False).stdout.split()
        for name in listed:
            if name.startswith(f"{PREFIX}-"):
                _ip("netns", "delete", name, check=False)
        _ip("link", "delete", BRIDGE, check=False)

    def up(self) -> Topology:
        self.clean()
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{self.client}/{SUBNET.prefixlen}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for n, (host, address) in enumerate(self.hosts.items()):
            ns, outside, inside = self.namespace(host), f"{PREFIX}{n}", f"{PREFIX}{n}i"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", BRIDGE, "up")
            _ip("-n", ns, "link", "set", inside, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def cut(self, host: str) -> None:
        _ip("-n", self.namespace(host), "link", "set", "eth0", "down")

    def rejoin(self, host: str) -> None:
        _ip("-n", self.namespace(host), "link", "set", "eth0", "up")

    def down(self) -> None:
        self.clean()
