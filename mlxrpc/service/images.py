"""Turns a request's image references into bytes, safely, before it reaches the engine.

http(s) URLs are fetched with a timeout, a size cap and a content-type check;
redirects are followed by hand (at most 3) so every hop is checked. Hosts that
resolve to private, loopback or link-local addresses are refused unless the
operator allows them (server-side request forgery), and so are other schemes
(file:, ftp:). data: URLs are decoded; server paths need an explicit opt-in.
Every refusal is INVALID_ARGUMENT naming the image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from ..engine.errors import invalid
from ..engine.types import ImageInput
from ..engine.vision import decode_data_url
from ..settings import Settings

MAX_REDIRECTS = 3


async def resolve_images(images: list[ImageInput], settings: Settings) -> None:
    """Fills ``data`` of every image in place (fetching concurrently)."""
    if len(images) > settings.max_images:
        raise invalid("images", f"at most {settings.max_images} images per request")
    await asyncio.gather(*(_resolve(image, i, settings) for i, image in enumerate(images)))


async def _resolve(image: ImageInput, index: int, settings: Settings) -> None:
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


async def _check_host(url: str, field: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise invalid(field, f"{field}: the URL scheme '{parts.scheme}' is not allowed (http, https, data)")
    if not parts.hostname:
        raise invalid(field, f"{field}: the URL has no host")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise invalid(field, f"{field}: cannot resolve {parts.hostname} ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise invalid(field, f"{field}: {parts.hostname} is a private or loopback address "
                                 "(the operator can allow it with --allow-private-image-urls)")


async def _fetch(url: str, field: str, settings: Settings) -> bytes:
    timeout = aiohttp.ClientTimeout(total=settings.image_fetch_timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(MAX_REDIRECTS + 1):
                await _check_host(url, field, settings.allow_private_image_urls)
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
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
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
