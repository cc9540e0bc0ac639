"""SSRF-safe fetching of user-supplied ``http(s)`` URLs.

A URL is fetched only when its host is on the configured allow-list, and (unless
``allow_private`` is set) when every address the host resolves to is public: loopback, private,
link-local, multicast, reserved and unspecified addresses are refused, including IPv4-mapped IPv6
forms and numeric tricks (``2130706433``, ``0x7f.1``), which the resolver turns into the address
they mean before the check. The address actually connected to is checked again after the
connection opens (a DNS answer that changes between check and connect is caught). Redirects are
followed by hand (at most 3), each hop checked the same way. Size and time are bounded.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from digihuman.errors import DigihumanError, TooLarge
from digihuman.storage import atomic_output


class UrlRefused(DigihumanError):
    """A URL the service will not fetch."""

    http_status = 400


class FetchFailed(DigihumanError):
    """The remote server did not give the file."""

    http_status = 422


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        or not ip.is_global
    )


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """``example.com`` matches itself; ``.example.com`` / ``*.example.com`` match subdomains."""
    host = host.lower().rstrip(".")
    for entry in allowlist:
        e = entry.lower().strip().rstrip(".")
        if e.startswith("*."):
            e = e[1:]
        if e.startswith("."):
            if host.endswith(e) or host == e[1:]:
                return True
        elif host == e:
            return True
    return False


def check_url(
    url: str, *, allowlist: list[str], allow_private: bool = False
) -> tuple[str, int, list[str]]:
    """Validate a URL; return (host, port, resolved addresses) or raise :class:`UrlRefused`."""
    if len(url) > 2048:
        raise UrlRefused("refused URL: longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"refused URL {url[:100]!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"refused URL {url[:100]!r}: only http and https URLs are fetched")
    if "@" in parts.netloc or not parts.hostname:
        raise UrlRefused(f"refused URL {url[:100]!r}: no host, or credentials in the URL")
    if any(c in url for c in "\x00\r\n\t "):
        raise UrlRefused(f"refused URL {url[:100]!r}: illegal characters")
    host = parts.hostname
    if not host_allowed(host, allowlist):
        raise UrlRefused(
            f"refused URL: host {host!r} is not on the allow-list "
            "(DIGIHUMAN_API__URL_ALLOWLIST); or put the file under the data root and pass its path"
        )
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"refused URL: cannot resolve host {host!r} ({exc})") from None
    addrs = sorted({str(info[4][0]) for info in infos})
    if not addrs:
        raise UrlRefused(f"refused URL: host {host!r} has no address")
    if not allow_private:
        for a in addrs:
            if not _is_public(ipaddress.ip_address(a.split("%")[0])):
                raise UrlRefused(
                    f"refused URL: host {host!r} resolves to a non-public address ({a}); "
                    "set DIGIHUMAN_API__ALLOW_PRIVATE_URLS=true to allow internal hosts"
                )
    return host, port, addrs


def fetch_to(
    url: str,
    dest: Path,
    *,
    allowlist: list[str],
    allow_private: bool = False,
    max_bytes: int = 50 * 1024 * 1024,
    timeout_s: float = 20.0,
) -> Path:
    """Download ``url`` to ``dest`` (atomically) within the limits, or raise a clear error."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=min(timeout_s, 10.0), follow_redirects=False) as client:
        for _hop in range(4):
            check_url(url, allowlist=allowlist, allow_private=allow_private)
            try:
                with client.stream("GET", url) as resp:
                    stream = resp.extensions.get("network_stream")
                    peer = stream.get_extra_info("server_addr") if stream is not None else None
                    if peer and not allow_private:
                        ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
                        if not _is_public(ip):
                            raise UrlRefused(f"refused URL: connected to a non-public address {ip}")
                    if resp.is_redirect:
                        url = str(resp.url.join(resp.headers.get("location", "")))
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(f"fetching {url[:100]} gave HTTP {resp.status_code}")
                    declared = int(resp.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise TooLarge(f"remote file is {declared} bytes; the limit is {max_bytes}")
                    got = 0
                    with atomic_output(dest) as tmp, tmp.open("wb") as f:
                        for chunk in resp.iter_bytes(64 * 1024):
                            got += len(chunk)
                            if got > max_bytes:
                                raise TooLarge(
                                    f"remote file is over the limit of {max_bytes} bytes"
                                )
                            if time.monotonic() > deadline:
                                raise FetchFailed(f"fetching {url[:100]} took over {timeout_s} s")
                            f.write(chunk)
                    return dest
            except httpx.HTTPError as exc:
                raise FetchFailed(f"fetching {url[:100]} failed: {exc}") from None
        raise FetchFailed(f"fetching {url[:100]}: too many redirects")
