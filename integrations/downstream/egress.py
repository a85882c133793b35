"""Where deliveries may go: HTTPS to public addresses, checked when a target is saved and on every request.

The URL is checked when a target is saved (``validate_target_url``), but a name can point elsewhere
by the time a delivery is sent (DNS rebinding, or a record changed since). So the session that sends
deliveries (``delivery_session``) resolves the host once per request, refuses a non-public address,
and connects to exactly the address it checked, keeping the host name for TLS (SNI and certificate
verification); it follows no redirect. requests-hardened (Saleor's) does the resolving and pinning
and applies its own filter; ``address_refusal`` is the hub's rule on top of it, the same one the
save-time check applies to every address the name resolves to.

Development receivers (``http://127.0.0.1:...``) need ``DOWNSTREAM_ALLOW_HTTP`` and
``DOWNSTREAM_ALLOW_LOOPBACK`` (``HUB_DOWNSTREAM_ALLOW_*``, on with ``HUB_DEBUG=true`` and in the
tests, off in production). Private, link-local (cloud metadata) and other special addresses are
refused in every configuration.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests.adapters import BaseAdapter
from requests_hardened.ip_filter import InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter

# Raised by the session for plain http or a non-public address; the transport makes it a permanent failure.
from integrations.transport import DestinationRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges Python's ipaddress calls global that still must not be reached from here.
_SHARED_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NOT_PUBLIC_EXTRA = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.0.0/24",  # IETF protocol assignments (3.11 calls part of it global)
        "192.88.99.0/24",  # 6to4 relay anycast
        "64:ff9b::/96",  # NAT64: an IPv4 address, possibly a private one, inside IPv6
        "64:ff9b:1::/48",  # local-use NAT64
        "2002::/16",  # 6to4: embeds an IPv4 address
        "5f00::/16",  # SRv6 segment identifiers
    )
)


def address_refusal(ip: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why a delivery must not go to ``ip`` (a phrase for an error message), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED_CGNAT:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "a reserved address"
    if not ip.is_global or any(ip in net for net in _NOT_PUBLIC_EXTRA):
        return "an address that is not publicly routable"
    return None


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a target's address, or None when deliveries may go there."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"}:
        return "Use an https:// URL."
    if parts.scheme == "http" and not settings.DOWNSTREAM_ALLOW_HTTP:
        return "Use https://: plain http is allowed only with HUB_DOWNSTREAM_ALLOW_HTTP=true (development)."
    if parts.username is not None or parts.password is not None:
        return "Leave user name and password out of the URL (the list of targets shows it)."
    host = parts.hostname
    if not host:
        return "The URL has no host."
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The URL has an invalid port."
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError):
        return f"{host} does not resolve; the hub checks where a target's name points before saving it."
    for ip in addresses:
        reason = address_refusal(ip, allow_loopback=settings.DOWNSTREAM_ALLOW_LOOPBACK)
        if reason:
            return f"{host} resolves to {ip}, {reason}; targets must be at public addresses."
    return None


def validate_target_url(value: str) -> None:
    """Model field validator for ``DownstreamTarget.url``."""
    problem = url_problem(value)
    if problem:
        raise ValidationError(problem, code="unsafe_target_url")


class _PinnedPublicAddressAdapter(IPFilterAdapter):
    """requests-hardened's adapter (resolve once, connect to that address) plus the hub's address rule."""

    def __init__(self, *, https: bool, allow_loopback: bool) -> None:
        super().__init__(is_https_proto=https, allow_loopback=allow_loopback)
        self.allow_loopback = allow_loopback

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host = urlsplit(request.url or "").hostname or ""
        try:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        except InvalidIPAddress as exc:
            ip = ipaddress.ip_address(str(exc))
            reason = address_refusal(ip, allow_loopback=self.allow_loopback) or "not a public address"
            raise DestinationRefused(f"refused to connect: {host} resolves to {ip}, {reason}") from None
        # The address the connection will be made to (requests-hardened writes IPv6 in brackets).
        ip = ipaddress.ip_address(str(host_params["host"]).strip("[]"))
        reason = address_refusal(ip, allow_loopback=self.allow_loopback)
        if reason:
            raise DestinationRefused(f"refused to connect: {host} resolves to {ip}, {reason}")
        return host_params, pool_kwargs


class _PlainHttpRefused(BaseAdapter):
    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        host = urlsplit(request.url or "").hostname
        raise DestinationRefused(f"refused to send to {host} over plain http: targets must use https")

    def close(self) -> None:
        pass


class _NoRedirectSession(requests.Session):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        # A redirect would carry the delivery (and its personal data) somewhere nobody checked.
        kwargs["allow_redirects"] = False
        return super().send(request, **kwargs)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict:
        # No proxy from the environment (HTTPS_PROXY...): a proxy would resolve the name itself,
        # after the check, so the address checked would not be the address reached. The rest of
        # the environment (REQUESTS_CA_BUNDLE for a company's CA) still applies.
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["proxies"] = {}
        return merged


def delivery_session() -> requests.Session:
    """A session for deliveries: https (http only when allowed) to checked public addresses, no redirects."""
    allow_loopback = settings.DOWNSTREAM_ALLOW_LOOPBACK
    session = _NoRedirectSession()
    session.mount("https://", _PinnedPublicAddressAdapter(https=True, allow_loopback=allow_loopback))
    if settings.DOWNSTREAM_ALLOW_HTTP:
        session.mount("http://", _PinnedPublicAddressAdapter(https=False, allow_loopback=allow_loopback))
    else:
        session.mount("http://", _PlainHttpRefused())
    return session
