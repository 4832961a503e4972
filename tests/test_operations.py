"""Operations endpoints: liveness, readiness, metrics, request ids and the error shape."""

from __future__ import annotations


async def test_healthz_and_readyz_report_ok_with_real_database_and_redis(client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_every_response_carries_the_request_id_it_was_given(client) -> None:
    for given in ("abc-123", "req/1 retry#2", "x" * 128):
        response = await client.get("/healthz", headers={"X-Request-ID": given})
        assert response.headers["x-request-id"] == given
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    for unusable in (b"x" * 129, "café".encode()):  # too long; not ASCII
        response = await client.get("/healthz", headers={"X-Request-ID": unusable})
        assert len(response.headers["x-request-id"]) == 32


async def test_unknown_path_gets_not_found_in_the_contract_error_shape(client) -> None:
    response = await client.get("/api/v1/nope", headers={"X-Request-ID": "r1"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "NotFound", "message": "Not Found", "request_id": "r1"}
    }


async def test_metrics_count_requests_by_route_template(client) -> None:
    await client.get("/healthz")
    body = (await client.get("/metrics")).text
    assert 'swapmeter_http_requests_total{method="GET",route="/healthz",status="200"}' in body


async def test_every_openapi_operation_has_its_own_id(client) -> None:
    """Client generators refuse a document where two operations share an id."""
    spec = (await client.get("/openapi.json")).json()
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))


async def test_with_a_metrics_token_the_apis_metrics_need_it(settings) -> None:
    """SWAPMETER_METRICS_TOKEN set: /metrics without the bearer token (or with another)
    is 401 in the contract's error shape; with it, the metrics."""
    import httpx

    from app.main import create_app

    application = create_app(settings.model_copy(update={"metrics_token": "scrape-me-123"}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}):
                refused = await c.get("/metrics", headers=headers)
                assert refused.status_code == 401, headers
                assert refused.json()["error"]["code"] == "Unauthorized"
                assert "swapmeter_" not in refused.text
            allowed = await c.get("/metrics", headers={"Authorization": "Bearer scrape-me-123"})
            assert allowed.status_code == 200 and "swapmeter_http_requests_total" in allowed.text
