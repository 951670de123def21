"""gRPC over TLS and mTLS, with certificates made for the test by openssl."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests

from mlxrpc.gateway.http.upstream import UpstreamTLS
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import LoopThread
from .helpers import unavailable


def _sign(d: Path, name: str, cn: str, ca: Path, ca_key: Path, ext: str) -> None:
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
        "-out", str(d / f"{name}.csr"), "-subj", f"/CN={cn}")
    (d / f"{name}.ext").write_text(ext)
    run("openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "1", "-extfile", str(d / f"{name}.ext"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
                    "-out", str(d / "ca.pem"), "-days", "1", "-subj", "/CN=mlxrpc-test-ca"],
                   check=True, capture_output=True)
    _sign(d, "server", "localhost", d / "ca.pem", d / "ca.key",
          "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _sign(d, "client", "client", d / "ca.pem", d / "ca.key", "extendedKeyUsage=clientAuth\n")
    return d


def _generate(channel: grpc.Channel) -> int:
    request = pb.GenerateRequest(model="default", text="hi")
    request.stopping.max_tokens = 2
    return pb_grpc.InferenceStub(channel).Generate(request, timeout=20).finish.usage.completion_tokens


def test_tls_server_with_local_sidecar(make_stack, certs: Path) -> None:
    stack = make_stack(tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"))
    with grpc.insecure_channel(stack.grpc_target) as plain, pytest.raises(grpc.RpcError):
        _generate(plain)
    ca = (certs / "ca.pem").read_bytes()
    with grpc.secure_channel(stack.grpc_target, grpc.ssl_channel_credentials(ca)) as secure:
        assert _generate(secure) == 2
    # The co-located sidecar reaches the engine over its local Unix socket.
    r = requests.post(f"{stack.http_base}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200


def test_mtls_requires_a_client_certificate(make_stack, certs: Path) -> None:
    from mlxrpc.gateway.app import create_app, start_app

    stack = make_stack(http=False, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"),
                       tls_client_ca=str(certs / "ca.pem"))
    ca = (certs / "ca.pem").read_bytes()
    with grpc.secure_channel(stack.grpc_target, grpc.ssl_channel_credentials(ca)) as anonymous, \
            pytest.raises(grpc.RpcError):
        _generate(anonymous)
    tls = UpstreamTLS.from_files(str(certs / "ca.pem"), str(certs / "client.pem"), str(certs / "client.key"))
    assert tls is not None
    with grpc.secure_channel(stack.grpc_target, tls.credentials()) as mutual:
        assert _generate(mutual) == 2
    # A standalone sidecar in front of the mTLS engine.
    thread = LoopThread()
    try:
        runner, port = thread.run(start_app(create_app([stack.grpc_target], 1 << 20, tls), "127.0.0.1", 0))
        r = requests.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                          timeout=30)
        assert r.status_code == 200, r.text
        thread.run(runner.cleanup())
    finally:
        thread.close()


def test_gateway_workers_all_reach_an_mtls_engine(make_stack, certs: Path) -> None:
    """`mlxrpc gateway --workers 2` hands the upstream TLS options to every worker."""
    stack = make_stack(http=False, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"),
                       tls_client_ca=str(certs / "ca.pem"))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "mlxrpc", "gateway", "--upstream", stack.grpc_target, "--workers", "2",
         "--host", "127.0.0.1", "--http-port", "0", "--upstream-ca", str(certs / "ca.pem"),
         "--upstream-cert", str(certs / "client.pem"), "--upstream-key", str(certs / "client.key")],
        stderr=subprocess.PIPE, text=True)
    try:
        assert gateway.stderr is not None
        port = next(int(m.group(1)) for line in gateway.stderr
                    if (m := re.search(r"REST sidecar on port (\d+)", line)))
        for _ in range(6):  # new connections, spread over the workers by the kernel
            r = requests.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                              json={"prompt": "hi", "max_tokens": 2}, headers={"Connection": "close"})
            assert r.status_code == 200, r.text
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(30) == 0
    finally:
        gateway.kill()
