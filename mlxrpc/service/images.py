"""Turns a request's image references into bytes, safely, before it reaches the engine.

http(s) URLs are fetched with a timeout, a size cap and a content-type check;
redirects are followed by hand (at most 3) so every hop is checked. Hosts that
resolve to private, loopback or link-local addresses are refused unless the
operator allows them (server-side request forgery), and so are other schemes
(file:, ftp:). A host is resolved once, and the connection goes to exactly the
addresses that were checked (no second lookup for DNS rebinding to answer).
IPv4 addresses carried inside IPv6 ones (mapped, compatible, NAT64, 6to4,
Teredo) are checked too. data: URLs are decoded; server paths need an explicit
opt-in. Image sizes are read from their headers and capped here, before any
pixel is decoded. Every refusal is INVALID_ARGUMENT naming the image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..engine.errors import invalid
from ..engine.types import ImageInput
from ..engine.vision import check_pixels, decode_data_url, image_size
from ..settings import ServiceSettings

MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215's local-use NAT64 prefix: site-specific, never a public address.
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


async def resolve_images(images: list[ImageInput], settings: ServiceSettings) -> None:
    """Fills ``data`` of every image in place (fetching concurrently)."""
    if len(images) > settings.max_images:
        raise invalid("images", f"at most {settings.max_images} images per request")
    await asyncio.gather(*(_resolve(image, i, settings) for i, image in enumerate(images)))
    # Headers only, but Pillow's header parsing (PNG text chunks) is still CPU work.
    sizes = await asyncio.get_running_loop().run_in_executor(
        None, lambda: [image_size(image.data, f"images[{i}]") for i, image in enumerate(images)])
    check_pixels(sizes, settings.max_image_pixels, settings.max_request_pixels)


async def _resolve(image: ImageInput, index: int, settings: ServiceSettings) -> None:
    field = f"images[{index}]"
    if image.data:
        pass
    elif image.url.startswith("data:"):
        image.data = decode_data_url(image.url, settings.max_image_bytes, field)
    elif image.url:
        image.data = await _fetch(image.url, field, settings)
    elif image.path:
        if not settings.allow_local_image_paths:
            raise invalid(field, f"{field}: server paths are not allowed (--allow-local-image-paths)")
        path = Path(image.path)
        if not path.is_file():
            raise invalid(field, f"{field}: no such file on the server")
        image.data = path.read_bytes()
    if len(image.data) > settings.max_image_bytes:
        raise invalid(field, f"{field} is larger than {settings.max_image_bytes} bytes")


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` and every IPv4 address embedded in it are public unicast."""
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not (address.is_multicast or address.is_reserved)
    if not address.is_global or address.is_multicast or address.is_site_local or address in LOCAL_NAT64:
        return False
    return all(is_public(v4) for v4 in embedded_ipv4(address))


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and a gateway would reach)."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in NAT64 or address.packed[:12] == bytes(12):  # NAT64, or IPv4-compatible ::a.b.c.d
        found.append(ipaddress.IPv4Address(address.packed[12:]))
    return found


class AddressRefused(OSError):
    """A URL's host is not a public address (raised inside aiohttp's connect)."""


async def lookup_host(host: str, port: int, family: int) -> list[tuple]:
    """getaddrinfo for TCP; the one DNS lookup of each connection."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)


class PinnedResolver(AbstractResolver):
    """Resolves a host once and gives aiohttp exactly the addresses it checked.

    aiohttp connects to the returned addresses and still sends the URL's host
    name as the Host header and TLS server name.
    """

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        infos = await lookup_host(host, port, family)
        results: list[ResolveResult] = []
        for info_family, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if not self._allow_private and not is_public(address):
                raise AddressRefused(f"{host} is a private or loopback address "
                                     "(the operator can allow it with --allow-private-image-urls)")
            results.append(ResolveResult(hostname=host, host=sockaddr[0], port=sockaddr[1], family=info_family,
                                         proto=proto, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        return results

    async def close(self) -> None:
        pass


def _check_url(url: str, field: str, allow_private: bool) -> None:
    """Scheme and host checks; an IP-literal host is checked here (aiohttp does not resolve it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise invalid(field, f"{field}: the URL scheme '{parts.scheme}' is not allowed (http, https, data)")
    if not parts.hostname:
        raise invalid(field, f"{field}: the URL has no host")
    try:
        literal = ipaddress.ip_address(parts.hostname.split("%")[0])
    except ValueError:
        return  # a name: PinnedResolver checks what it resolves to
    if not allow_private and not is_public(literal):
        raise invalid(field, f"{field}: {parts.hostname} is a private or loopback address "
                             "(the operator can allow it with --allow-private-image-urls)")


async def _fetch(url: str, field: str, settings: ServiceSettings) -> bytes:
    timeout = aiohttp.ClientTimeout(total=settings.image_fetch_timeout)
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(settings.allow_private_image_urls),
                                     use_dns_cache=False)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for _ in range(MAX_REDIRECTS + 1):
                _check_url(url, field, settings.allow_private_image_urls)
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise invalid(field, f"{field}: fetching the image returned HTTP {response.status}")
                    kind = response.headers.get("Content-Type", "")
                    if not kind.startswith("image/") and kind.split(";")[0] != "application/octet-stream":
                        raise invalid(field, f"{field}: the URL is not an image (Content-Type '{kind}')")
                    return await _read_capped(response, field, settings.max_image_bytes)
            raise invalid(field, f"{field}: too many redirects")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            raise invalid(field, f"{field}: {exc.os_error}") from None
        raise invalid(field, f"{field}: cannot fetch the image ({type(exc).__name__}: {exc})") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise invalid(field, f"{field}: cannot fetch the image ({type(exc).__name__}: {exc})") from None


async def _read_capped(response: aiohttp.ClientResponse, field: str, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise invalid(field, f"{field} is larger than {limit} bytes")
    data = bytearray()
    async for block in response.content.iter_chunked(1 << 16):
        data += block
        if len(data) > limit:
            raise invalid(field, f"{field} is larger than {limit} bytes")
    return bytes(data)
