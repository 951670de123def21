"""MCP servers from ``--mcp-config``: the config file, one long-lived connection
per server (reconnected with backoff), and listing and calling their tools.

Tools are offered as ``SERVER__TOOL``, as vllm-mlx names them. What runs on
this machine comes only from the config file, never from a request. A tool's
failure of any kind becomes an error *result* (for the model or the caller to
read), never an exception out of ``McpManager.call``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ..engine.errors import EngineError, ErrorCode, invalid
from ..settings import McpSettings

log = logging.getLogger(__name__)

SEPARATOR = "__"
TRANSPORTS = ("stdio", "sse", "streamable-http")
_TRANSPORT_ALIASES = {"http": "streamable-http", "streamable_http": "streamable-http",
                      "streamableHttp": "streamable-http"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
CONNECT_TIMEOUT = 30.0  # seconds to start, initialize and list tools
PING_INTERVAL = 15.0  # an idle connection is checked this often
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0

CONNECTING, CONNECTED, DISABLED = "connecting", "connected", "disabled"


class McpConfigError(ValueError):
    """An unusable --mcp-config file; ``mlxrpc serve`` exits with its message."""


@dataclass
class ServerConfig:
    name: str
    transport: str
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds per tool call on this server (None: --mcp-call-timeout).
    timeout: float | None = None
    enabled: bool = True


def check_settings(settings: McpSettings) -> list[ServerConfig]:
    """The configured servers; McpConfigError for MCP settings ``mlxrpc serve`` must refuse."""
    if settings.mcp_max_steps < 2:
        raise McpConfigError("--mcp-max-steps must be at least 2 (the last step answers without tools)")
    if settings.mcp_call_timeout <= 0:
        raise McpConfigError("--mcp-call-timeout must be a positive number of seconds")
    if settings.mcp_max_result_bytes < 1:
        raise McpConfigError("--mcp-max-result-bytes must be at least 1")
    return load_config(settings.mcp_config) if settings.mcp_config else []


def load_config(path: str) -> list[ServerConfig]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise McpConfigError(f"cannot read --mcp-config {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(f"--mcp-config {path} is not valid JSON: {exc}") from None
    try:
        return parse_config(data)
    except McpConfigError as exc:
        raise McpConfigError(f"--mcp-config {path}: {exc}") from None


def parse_config(data: Any) -> list[ServerConfig]:
    """vllm-mlx's ``{"servers": {NAME: {...}}}`` or the common ``{"mcpServers": {NAME: {...}}}``."""
    keys = [k for k in ("servers", "mcpServers") if isinstance(data, dict) and k in data]
    if len(keys) != 1:
        raise McpConfigError('expected a JSON object with one of "servers" or "mcpServers"')
    servers = data[keys[0]]
    if not isinstance(servers, dict):
        raise McpConfigError(f'"{keys[0]}" must map server names to their settings')
    return [_server(name, spec) for name, spec in servers.items()]


def _server(name: str, spec: Any) -> ServerConfig:
    if not _NAME.match(name) or SEPARATOR in name:
        raise McpConfigError(f"server name '{name}' must be letters, digits, '-' and '_' "
                             f"(not starting with either, and without '{SEPARATOR}')")
    where = f"server '{name}'"
    if not isinstance(spec, dict):
        raise McpConfigError(f"{where} must be a JSON object")
    command, url = _text(spec, "command", where), _text(spec, "url", where)
    transport = spec.get("transport") or spec.get("type")
    if transport is None:
        transport = "stdio" if command else "sse" if url.rstrip("/").endswith("/sse") else "streamable-http"
    transport = _TRANSPORT_ALIASES.get(transport, transport)
    if transport not in TRANSPORTS:
        raise McpConfigError(f"{where}: transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    if transport == "stdio" and not command:
        raise McpConfigError(f"{where}: the stdio transport needs a command")
    if transport != "stdio":
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise McpConfigError(f"{where}: the {transport} transport needs an http(s) url")
    timeout = spec.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise McpConfigError(f"{where}: timeout must be a positive number of seconds")
    enabled = spec.get("enabled", not spec.get("disabled", False))
    if not isinstance(enabled, bool):
        raise McpConfigError(f"{where}: enabled must be true or false")
    args = spec.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise McpConfigError(f"{where}: args must be a list of strings")
    return ServerConfig(name=name, transport=transport, command=command, args=args,
                        env=_strings(spec, "env", where), cwd=_text(spec, "cwd", where), url=url,
                        headers=_strings(spec, "headers", where),
                        timeout=float(timeout) if timeout is not None else None, enabled=enabled)


def _text(spec: dict, key: str, where: str) -> str:
    value = spec.get(key, "")
    if not isinstance(value, str):
        raise McpConfigError(f"{where}: {key} must be a string")
    return value


def _strings(spec: dict, key: str, where: str) -> dict[str, str]:
    value = spec.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise McpConfigError(f"{where}: {key} must map names to strings")
    return value


# ---------------------------------------------------------------- tools and results


@dataclass(frozen=True)
class McpTool:
    server: str
    name: str
    description: str
    parameters: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.server}{SEPARATOR}{self.name}"


@dataclass(frozen=True)
class ToolOutcome:
    """A tool call's result as text; on failure ``content`` is what the model reads."""

    content: str
    is_error: bool = False
    error_message: str = ""


def result_text(result: types.CallToolResult) -> str:
    parts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
            parts.append(block.resource.text)
        elif isinstance(block, (types.ImageContent, types.AudioContent)):
            parts.append(f"[{block.type} {block.mime_type}]")
        else:
            parts.append(block.model_dump_json(by_alias=True, exclude_none=True))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


def cap(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8, saying how much was cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    kept = data[:max_bytes].decode(errors="ignore")
    return f"{kept}\n[truncated: {len(data) - len(kept.encode())} more bytes]"


def describe(exc: BaseException) -> str:
    """A short reason for a failure, looking inside anyio's exception groups."""
    while getattr(exc, "exceptions", None):  # an exception group (Python 3.10 has no builtin one)
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------- connections


class Connection:
    """One configured server, kept connected by ``run`` (a long-lived task)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state = CONNECTING if config.enabled else DISABLED
        self.tools: list[McpTool] = []
        self.last_error = ""
        self.reconnects = 0
        self.attempted = asyncio.Event()  # the first connection attempt has ended
        self._session: ClientSession | None = None
        self._wake = asyncio.Event()  # stop, or the connection was lost
        self._stopping = False
        self._ever_connected = False
        self._live = False  # this round's session got connected

    async def run(self) -> None:
        backoff = BACKOFF_START
        while not self._stopping:
            self._wake.clear()
            self._live = False
            try:
                await self._session_round()
            except Exception as exc:  # noqa: BLE001 - any failure means: try again later
                error = describe(exc)
                # Said once per new reason, not at every retry.
                log.log(logging.DEBUG if error == self.last_error else logging.WARNING,
                        "MCP server '%s': %s (retrying)", self.config.name, error)
                self.last_error = error
            finally:
                self._session, self.tools, self.state = None, [], CONNECTING
                self.attempted.set()
            if self._stopping:
                break
            if self._live:  # a working connection dropped: retry soon
                backoff = BACKOFF_START
            with anyio.move_on_after(backoff):
                await self._wake.wait()
            backoff = min(backoff * 2, BACKOFF_MAX)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _session_round(self) -> None:
        async with self._transport() as (read, write):
            # Messages pass through a relay whose end (EOF: the server died)
            # wakes the watcher at once, without waiting for a ping.
            relay_in, relay_out = anyio.create_memory_object_stream[Any](0)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._relay, read, relay_in)
                async with ClientSession(relay_out, write) as session:
                    with anyio.fail_after(CONNECT_TIMEOUT):
                        await session.initialize()
                        tools = await self._list_tools(session)
                    self._connected(session, tools)
                    await self._watch(session)
                tasks.cancel_scope.cancel()

    def _connected(self, session: ClientSession, tools: list[McpTool]) -> None:
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = self._live = True
        self._session, self.tools, self.state, self.last_error = session, tools, CONNECTED, ""
        self.attempted.set()
        log.info("MCP server '%s' connected (%s): %d tools", self.config.name, self.config.transport,
                 len(tools))

    async def _relay(self, source: Any, sink: Any) -> None:
        try:
            async with sink:
                async for item in source:
                    await sink.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._wake.set()

    async def _watch(self, session: ClientSession) -> None:
        """Returns on stop; raises when the connection is lost or stops answering pings."""
        while not self._stopping:
            with anyio.move_on_after(PING_INTERVAL):
                await self._wake.wait()
            if self._stopping:
                return
            if self._wake.is_set():
                raise ConnectionError("the connection closed")
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    await session.send_ping()
            except TimeoutError:
                raise ConnectionError("the server stopped answering pings") from None

    async def _list_tools(self, session: ClientSession) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor = None
        while True:
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            tools += [McpTool(self.config.name, t.name, t.description or "", t.input_schema) for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                return tools

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        c = self.config
        if c.transport == "stdio":
            params = StdioServerParameters(command=c.command, args=c.args, env=c.env or None, cwd=c.cwd or None)
            async with stdio_client(params) as streams:
                yield streams
        elif c.transport == "sse":
            async with sse_client(c.url, headers=c.headers or None) as streams:
                yield streams[0], streams[1]
        else:
            import httpx2  # the MCP SDK's own HTTP client

            timeout = httpx2.Timeout(CONNECT_TIMEOUT, read=300.0)
            async with (httpx2.AsyncClient(headers=c.headers, timeout=timeout) as http,
                        streamable_http_client(c.url, http_client=http) as streams):
                yield streams[0], streams[1]

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> types.CallToolResult:
        session = self._session
        if session is None:
            reason = f": {self.last_error}" if self.last_error else ""
            raise ConnectionError(f"MCP server '{self.config.name}' is not connected{reason}")
        return await session.call_tool(tool, arguments, read_timeout_seconds=timeout)


class McpManager:
    """Every configured server's connection; lists and runs their tools."""

    def __init__(self, servers: list[ServerConfig], *, call_timeout: float = 60.0,
                 max_result_bytes: int = 65536) -> None:
        self.connections = {s.name: Connection(s) for s in servers}
        self.call_timeout = call_timeout
        self.max_result_bytes = max_result_bytes
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def from_settings(cls, settings: McpSettings) -> McpManager:
        return cls(check_settings(settings), call_timeout=settings.mcp_call_timeout,
                   max_result_bytes=settings.mcp_max_result_bytes)

    def start(self) -> None:
        """Starts connecting every enabled server in the background."""
        self._tasks = [asyncio.get_running_loop().create_task(c.run(), name=f"mcp-{name}")
                       for name, c in self.connections.items() if c.config.enabled]

    async def wait_ready(self) -> None:
        """Waits for every server's first connection attempt (each bounded in time)."""
        await asyncio.gather(*(c.attempted.wait() for c in self.connections.values() if c.config.enabled))

    async def close(self, timeout: float = 10.0) -> None:
        for connection in self.connections.values():
            connection.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        self._tasks = []

    def tools(self, server: str = "") -> list[McpTool]:
        if server:
            return list(self._connection(server, "server_label").tools)
        return [t for c in self.connections.values() for t in c.tools]

    def toolset(self, server: str, allowed: list[str], field_name: str) -> list[McpTool]:
        """The tools a request may let the service call, from one server."""
        connection = self._connection(server, f"{field_name}.server_label")
        if connection.state != CONNECTED:
            reason = f": {connection.last_error}" if connection.last_error else ""
            raise EngineError(ErrorCode.UNAVAILABLE, f"MCP server '{server}' is not connected{reason}",
                              field=f"{field_name}.server_label")
        names = {t.name for t in connection.tools}
        if unknown := [name for name in allowed if name not in names]:
            raise invalid(f"{field_name}.allowed_tools", f"MCP server '{server}' has no tool '{unknown[0]}'")
        return [t for t in connection.tools if not allowed or t.name in allowed]

    def _connection(self, server: str, field_name: str) -> Connection:
        if server not in self.connections:
            known = ", ".join(self.connections) or "none (start the server with --mcp-config)"
            raise invalid(field_name, f"unknown MCP server '{server}'; configured: {known}")
        return self.connections[server]

    async def call(self, full_name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Runs ``SERVER__TOOL``; INVALID_ARGUMENT only for a name that names nothing."""
        server, _, tool = full_name.partition(SEPARATOR)
        connection = self._connection(server, "name")
        if connection.state == CONNECTED and tool not in {t.name for t in connection.tools}:
            raise invalid("name", f"MCP server '{server}' has no tool '{tool}'")
        return await self.run(connection, tool, arguments)

    async def run(self, connection: Connection, tool: str, arguments: dict[str, Any]) -> ToolOutcome:
        timeout = connection.config.timeout or self.call_timeout
        try:
            result = await connection.call(tool, arguments, timeout)
        except Exception as exc:  # noqa: BLE001 - the model (or caller) reads the failure
            timed_out = isinstance(exc, MCPError) and exc.code == types.REQUEST_TIMEOUT
            message = f"the tool did not answer within {timeout:g} s" if timed_out else describe(exc)
            log.info("MCP tool %s%s%s failed: %s", connection.config.name, SEPARATOR, tool, message)
            return ToolOutcome(f"Error: {message}", is_error=True, error_message=message)
        text = cap(result_text(result), self.max_result_bytes)
        return ToolOutcome(text, is_error=result.is_error, error_message=text if result.is_error else "")
