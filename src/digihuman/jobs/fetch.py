"""SSRF-safe fetching of user-supplied ``http(s)`` URLs.

A URL is fetched only when its host is on the configured allow-list, and (unless
``allow_private`` is set) when every address the host resolves to is public: loopback, private,
link-local, multicast, reserved and unspecified addresses are refused, including IPv4-mapped IPv6
forms and numeric tricks (``2130706433``, ``0x7f.1``), which the resolver turns into the address
they mean before the check.

The name is resolved once per hop and the connection goes to an address from that checked answer
(the ``Host`` header, the TLS SNI and the certificate check still use the name), so a DNS answer
that changes between the check and the connect (DNS rebinding) never reaches another address.
No proxy from the environment is used (a proxy would resolve the name itself). Redirects are
followed by hand (at most 3), each hop checked the same way.

Bounds: ``timeout_s`` is one deadline for the whole fetch (every hop, connect, TLS, each read:
a server trickling bytes is cut off at the deadline, not at the next 64 KiB), the connect is
bounded by ``connect_timeout_s`` and the wait for the first byte of the answer by
``first_byte_timeout_s``; ``max_bytes`` bounds the body.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from digihuman.errors import DigihumanError, TooLarge
from digihuman.storage import DataRoot, atomic_output

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``, in preference order (the default asks the system resolver)."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class UrlRefused(DigihumanError):
    """A URL the service will not fetch."""

    http_status = 400


class FetchFailed(DigihumanError):
    """The remote server did not give the file."""

    http_status = 422


def is_url(source: str) -> bool:
    """Whether a user-supplied source is a URL (any ``scheme://``, in any letter case).

    The API check and the worker both use this, so ``HTTP://host/a.wav`` is fetched (or refused)
    as a URL everywhere, and ``file://...`` is refused as a URL, never looked up as a path.
    """
    return _SCHEME.match(source) is not None


def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver's addresses for ``host``, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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


@dataclass(frozen=True)
class _Target:
    """A checked URL: where to connect (``addrs``, all checked) and what to ask for."""

    scheme: str  # lower case
    host: str  # the name (Host header, SNI, certificate check)
    port: int
    target: str  # path and query, percent-encoded
    addrs: tuple[str, ...]


def _validate(
    url: str, *, allowlist: list[str], allow_private: bool, resolve: Resolver | None
) -> _Target:
    if len(url) > 2048:
        raise UrlRefused("refused URL: longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"refused URL {url[:100]!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
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
    port = port or (443 if scheme == "https" else 80)
    try:
        addrs = (resolve or system_resolve)(host, port)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"refused URL: cannot resolve host {host!r} ({exc})") from None
    if not addrs:
        raise UrlRefused(f"refused URL: host {host!r} has no address")
    if not allow_private:
        for a in addrs:
            if not _is_public(ipaddress.ip_address(a.split("%")[0])):
                raise UrlRefused(
                    f"refused URL: host {host!r} resolves to a non-public address ({a}); "
                    "set DIGIHUMAN_API__ALLOW_PRIVATE_URLS=true to allow internal hosts"
                )
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return _Target(scheme, host, port, target, tuple(addrs))


def check_url(
    url: str,
    *,
    allowlist: list[str],
    allow_private: bool = False,
    resolve: Resolver | None = None,
) -> tuple[str, int, list[str]]:
    """Validate a URL; return (host, port, resolved addresses) or raise :class:`UrlRefused`."""
    t = _validate(url, allowlist=allowlist, allow_private=allow_private, resolve=resolve)
    return t.host, t.port, list(t.addrs)


def _connect(ip: str, port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to a numeric address (no name lookup here: the address was checked)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect((ip, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _make_stream(sock: socket.socket, deadline: float, first_byte_s: float) -> Any:
    import httpcore

    class BoundedStream(httpcore.NetworkStream):
        """A socket whose every operation is bounded by the fetch's deadline."""

        def __init__(self, s: socket.socket) -> None:
            self.sock = s
            self.answered = False  # a byte of the answer arrived

        def _budget(self, timeout: float | None, exc: type[Exception]) -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise exc("the fetch deadline passed")
            return left if timeout is None else min(left, timeout)

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            t = self._budget(timeout, httpcore.ReadTimeout)
            if not self.answered:
                t = min(t, first_byte_s)
            try:
                self.sock.settimeout(t)
                data = self.sock.recv(max_bytes)
            except TimeoutError:
                what = "the next bytes" if self.answered else "the first byte of the answer"
                raise httpcore.ReadTimeout(f"no {what} within {t:.1f} s") from None
            except OSError as exc:
                raise httpcore.ReadError(str(exc)) from None
            self.answered = True
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            while buffer:
                try:
                    self.sock.settimeout(self._budget(timeout, httpcore.WriteTimeout))
                    n = self.sock.send(buffer)
                except TimeoutError:
                    raise httpcore.WriteTimeout("sending the request timed out") from None
                except OSError as exc:
                    raise httpcore.WriteError(str(exc)) from None
                buffer = buffer[n:]

        def close(self) -> None:
            self.sock.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> httpcore.NetworkStream:
            try:
                self.sock.settimeout(self._budget(timeout, httpcore.ConnectTimeout))
                tls = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname)
            except TimeoutError:
                self.sock.close()
                raise httpcore.ConnectTimeout("the TLS handshake timed out") from None
            except (OSError, ssl.SSLError) as exc:
                self.sock.close()
                raise httpcore.ConnectError(f"TLS: {exc}") from None
            return BoundedStream(tls)

        def get_extra_info(self, info: str) -> Any:
            if info == "ssl_object":
                return self.sock if isinstance(self.sock, ssl.SSLSocket) else None
            if info == "server_addr":
                return self.sock.getpeername()
            if info == "client_addr":
                return self.sock.getsockname()
            if info == "socket":
                return self.sock
            return None

    return BoundedStream(sock)


def _pinned_backend(
    addrs: tuple[str, ...], deadline: float, connect_s: float, first_byte_s: float
) -> Any:
    import httpcore

    class PinnedBackend(httpcore.NetworkBackend):
        """Connects to the checked addresses only, whatever name the request carries."""

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.NetworkStream:
            errors = []
            for ip in addrs:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpcore.ConnectTimeout("the fetch deadline passed")
                t = min(left, connect_s)
                try:
                    sock = _connect(ip, port, t)
                except TimeoutError:
                    errors.append(f"{ip}: no connection within {t:.1f} s")
                    continue
                except OSError as exc:
                    errors.append(f"{ip}: {exc}")
                    continue
                return _make_stream(sock, deadline, first_byte_s)
            raise httpcore.ConnectError("; ".join(errors))

    return PinnedBackend()


def fetch_to(
    url: str,
    dest: Path,
    *,
    allowlist: list[str],
    allow_private: bool = False,
    max_bytes: int = 50 * 1024 * 1024,
    timeout_s: float = 20.0,
    connect_timeout_s: float = 5.0,
    first_byte_timeout_s: float = 10.0,
    resolve: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (atomically) within the limits, or raise a clear error.

    ``resolve`` replaces the system resolver and ``ssl_context`` the default (system CAs,
    hostname checked); both are for tests and special deployments.
    """
    import httpcore

    deadline = time.monotonic() + timeout_s
    ctx = ssl_context or ssl.create_default_context()
    for _hop in range(4):
        t = _validate(url, allowlist=allowlist, allow_private=allow_private, resolve=resolve)
        backend = _pinned_backend(t.addrs, deadline, connect_timeout_s, first_byte_timeout_s)
        target = httpcore.URL(
            scheme=t.scheme.encode(),
            host=t.host.encode("idna"),
            port=t.port,
            target=t.target.encode("ascii"),
        )
        headers = [(b"Accept", b"*/*"), (b"User-Agent", b"digihuman-fetch")]
        try:
            with (
                httpcore.ConnectionPool(
                    ssl_context=ctx, max_connections=1, network_backend=backend
                ) as pool,
                pool.stream("GET", target, headers=headers) as resp,
            ):
                head = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
                if resp.status in (301, 302, 303, 307, 308) and head.get("location"):
                    url = urljoin(url, head["location"])
                    continue
                if resp.status != 200:
                    raise FetchFailed(f"fetching {url[:100]} gave HTTP {resp.status}")
                try:
                    declared = int(head.get("content-length") or 0)
                except ValueError:
                    declared = 0
                if declared > max_bytes:
                    raise TooLarge(f"remote file is {declared} bytes; the limit is {max_bytes}")
                got = 0
                with atomic_output(dest) as tmp, tmp.open("wb") as f:
                    for chunk in resp.iter_stream():
                        got += len(chunk)
                        if got > max_bytes:
                            raise TooLarge(f"remote file is over the limit of {max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise FetchFailed(f"fetching {url[:100]} took over {timeout_s:g} s")
                        f.write(chunk)
                return dest
        except httpcore.TimeoutException as exc:
            if time.monotonic() >= deadline:
                raise FetchFailed(f"fetching {url[:100]} took over {timeout_s:g} s") from None
            raise FetchFailed(f"fetching {url[:100]} timed out: {exc}") from None
        except (
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            ssl.SSLError,
        ) as exc:
            raise FetchFailed(f"fetching {url[:100]} failed: {exc}") from None
    raise FetchFailed(f"fetching {url[:100]}: too many redirects")


@contextmanager
def local_source(
    source: str,
    data_root: DataRoot,
    *,
    temp_name: str,
    allowlist: list[str],
    allow_private: bool = False,
    max_bytes: int = 50 * 1024 * 1024,
    timeout_s: float = 20.0,
    on_fetch: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """A job's input as a local file: a data-root path (confined, must exist) as it is, or a URL
    (any scheme, any case) fetched through :func:`fetch_to` to ``data_root.tests / temp_name``
    and removed when the block ends, however it ends. ``on_fetch`` runs before a download."""
    if not is_url(source):
        yield data_root.resolve(source, must_exist=True)
        return
    tmp = data_root.tests / temp_name
    try:
        if on_fetch is not None:
            on_fetch()
        fetch_to(
            source,
            tmp,
            allowlist=allowlist,
            allow_private=allow_private,
            max_bytes=max_bytes,
            timeout_s=timeout_s,
        )
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
