"""Operations: API keys, model management, metrics, request ids, scale-out."""

from __future__ import annotations

import grpc
import openai
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import LoopThread, start_stack, stop_stack
from .helpers import FakeDns, text_request

KEY, ADMIN = "sk-test-key", "sk-admin-key"


def test_api_keys_guard_both_surfaces(make_stack) -> None:
    stack = make_stack(api_key=[KEY], admin_key=ADMIN)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(text_request(max_tokens=2))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamGenerate(text_request(max_tokens=2), metadata=(("authorization", "Bearer no"),)))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Generate(text_request(max_tokens=2), metadata=(("authorization", f"Bearer {KEY}"),))
        assert ok.finish.usage.completion_tokens == 2
        # Probes stay open.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING

    base = f"{stack.http_base}/v1"
    with pytest.raises(openai.AuthenticationError) as denied:
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    assert denied.value.status_code == 401 and denied.value.body["type"] == "invalid_request_error"
    assert denied.value.body["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)
    assert client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2).usage
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True)
    assert len(list(stream)) >= 2
    assert requests.get(f"{stack.http_base}/health", timeout=10).status_code == 200
    assert requests.get(f"{stack.http_base}/metrics", timeout=10).status_code == 200


def test_models_are_added_and_removed_with_the_admin_key(make_stack, qwen_dir) -> None:
    stack = make_stack(api_key=[KEY], admin_key=ADMIN)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    user = {"Authorization": f"Bearer {KEY}"}
    url = f"{stack.http_base}/v1/models"
    denied = requests.post(url, json={"model": str(qwen_dir), "id": "qwen"}, headers=user, timeout=60)
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "invalid_request_error"
    added = requests.post(url, json={"model": str(qwen_dir), "id": "qwen"}, headers=admin, timeout=60)
    assert added.status_code == 201 and added.json()["id"] == "qwen"
    assert requests.post(url, json={"model": str(qwen_dir), "id": "qwen"}, headers=admin,
                         timeout=60).status_code == 409
    assert [m["id"] for m in requests.get(url, headers=user, timeout=10).json()["data"]] == ["llama", "qwen"]
    client = openai.OpenAI(base_url=url[:-7], api_key=KEY, max_retries=0)
    assert client.completions.create(model="qwen", prompt="hi", max_tokens=2).model == "qwen"
    with grpc.insecure_channel(stack.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service="qwen"))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert requests.delete(f"{url}/qwen", headers=admin, timeout=60).json()["deleted"] is True
        gone = health.Check(health_pb2.HealthCheckRequest(service="qwen"))
        assert gone.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert requests.get(f"{stack.http_base}/ready?model=qwen", timeout=10).status_code == 503
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="qwen", prompt="hi", max_tokens=2)
    missing = requests.post(url, json={"model": "/no/such/model"}, headers=admin, timeout=60)
    assert missing.status_code == 404


def test_model_management_is_off_without_an_admin_key(stack) -> None:
    r = requests.post(f"{stack.http_base}/v1/models", json={"model": "x"}, timeout=10)
    assert r.status_code == 403 and "--admin-key" in r.json()["error"]["message"]


def test_lru_unloads_the_least_recently_used_model(make_stack, qwen_dir, model_dir) -> None:
    stack = make_stack(admin_key=ADMIN, max_models=1)
    meta = (("authorization", f"Bearer {ADMIN}"),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        stub.LoadModel(pb.LoadModelRequest(source=str(qwen_dir), id="qwen"), metadata=meta)
        assert [m.id for m in stub.ListModels(pb.ListModelsRequest()).models] == ["qwen"]
        assert "default" in stub.ModelInfo(pb.ModelInfoRequest(model="qwen")).aliases


def test_memory_bound_unloads_least_recently_used(make_stack, qwen_dir, model_dir) -> None:
    from mlxrpc.engine.registry import checkpoint_bytes

    bound = checkpoint_bytes(qwen_dir) + checkpoint_bytes(model_dir) - 1
    stack = make_stack(admin_key=ADMIN, max_model_bytes=bound)
    meta = (("authorization", f"Bearer {ADMIN}"),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        stub.LoadModel(pb.LoadModelRequest(source=str(qwen_dir), id="qwen"), metadata=meta)
        assert [m.id for m in stub.ListModels(pb.ListModelsRequest()).models] == ["qwen"]


def test_load_on_demand_loads_a_model_named_by_path(make_stack, qwen_dir) -> None:
    stack = make_stack(load_on_demand=True)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        reply = stub.Generate(text_request(model=str(qwen_dir), max_tokens=2))
        assert reply.model == str(qwen_dir)


def test_metrics_count_requests_tokens_and_latency(stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="x", max_retries=0)
    client.completions.create(model="default", prompt="metrics please", max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    text = requests.get(f"{stack.http_base}/metrics", timeout=10).text
    for name in ("mlxrpc_requests_total", "mlxrpc_generation_tokens_total",
                 "mlxrpc_time_to_first_token_seconds_bucket", "mlxrpc_inter_token_latency_seconds_count",
                 "mlxrpc_queue_depth", "mlxrpc_running_sequences", "mlxrpc_prefix_cache_lookups_total",
                 "mlxrpc_model_load_seconds"):
        assert name in text, name
    assert 'mlxrpc_requests_total{code="NOT_FOUND",method="Generate"}' in text
    assert 'mlxrpc_requests_total{code="OK",method="Generate"}' in text


def test_request_id_travels_and_returns(stack) -> None:
    r = requests.post(f"{stack.http_base}/v1/completions", timeout=30,
                      headers={"X-Request-ID": "trace-123"}, json={"prompt": "hi", "max_tokens": 2})
    assert r.headers["X-Request-ID"] == "trace-123"
    r = requests.post(f"{stack.http_base}/v1/completions", timeout=30, stream=True,
                      json={"prompt": "hi", "max_tokens": 2, "stream": True})
    assert len(r.headers["X-Request-ID"]) >= 16


def test_one_sidecar_over_two_engines_survives_losing_one(model_dir) -> None:
    """gRPC client-side round_robin with health checking, no home-made balancer."""
    from mlxrpc.gateway.app import create_app, start_app

    engines = [start_stack([f"llama={model_dir}"], http=False) for _ in range(2)]
    thread = LoopThread()
    try:
        app = create_app([e.grpc_target for e in engines], 1 << 20)
        runner, port = thread.run(start_app(app, "127.0.0.1", 0, grace=1.0))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)

        def served_by() -> list[int]:
            for e in engines:
                e.engine.metrics.requests.clear()
            for _ in range(8):
                client.completions.create(model="default", prompt="hi", max_tokens=1)
            return [int(sum(s.value for m in e.engine.metrics.requests.collect() for s in m.samples
                            if s.name.endswith("_total"))) for e in engines]

        # Both engines serve (round_robin only starts using a subchannel once
        # it is connected, so the split need not be exactly even).
        assert all(n > 0 for n in served_by())
        stop_stack(engines.pop(0))
        for _ in range(6):
            assert client.completions.create(model="default", prompt="hi", max_tokens=1).usage
        thread.run(runner.cleanup())
    finally:
        for e in engines:
            stop_stack(e)
        thread.close()


def test_a_dns_name_in_front_of_two_engines_spreads_requests_over_both(model_dir) -> None:
    """``dns://SERVER/name:port``: a name resolving to two engines (127.0.0.1 and
    127.0.0.2 on one port, answered by a loopback DNS server); both serve."""
    from mlxrpc.gateway.app import create_app, start_app

    first = start_stack([f"llama={model_dir}"], http=False)
    port = int(first.grpc_target.rsplit(":", 1)[1])
    engines = [first, start_stack([f"llama={model_dir}"], http=False, host="127.0.0.2", grpc_port=port)]
    thread = LoopThread()
    try:
        dns, dns_port = thread.run(FakeDns.start(["127.0.0.1", "127.0.0.2"]))
        app = create_app([f"dns://127.0.0.1:{dns_port}/engines.mlxrpc.test:{port}"], 1 << 20)
        runner, http_port = thread.run(start_app(app, "127.0.0.1", 0, grace=1.0))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="x", max_retries=0)
        for _ in range(8):
            assert client.completions.create(model="llama", prompt="hi", max_tokens=1).usage
        served = [sum(s.value for m in e.engine.metrics.requests.collect() for s in m.samples
                      if s.name.endswith("_total")) for e in engines]
        assert all(n > 0 for n in served), served
        thread.run(runner.cleanup())
        dns.close()
    finally:
        for e in engines:
            stop_stack(e)
        thread.close()


def test_cors_is_off_by_default_and_follows_the_allowed_origins(make_stack) -> None:
    stack = make_stack(cors_origin=["https://chat.example"])
    url = f"{stack.http_base}/v1/chat/completions"
    preflight = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"}
    ok = requests.options(url, headers=preflight, timeout=10)
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == "https://chat.example"
    other = requests.options(url, headers={**preflight, "Origin": "https://evil.example"}, timeout=10)
    assert other.status_code == 403
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for stream in (False, True):
        r = requests.post(url, json={**body, "stream": stream}, timeout=30,
                          headers={"Origin": "https://chat.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example"


def test_no_cors_headers_without_configuration(stack) -> None:
    r = requests.get(f"{stack.http_base}/v1/models", headers={"Origin": "https://x.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
