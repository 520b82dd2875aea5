"""Property-based HTTP fuzzing of spec/openapi.yaml (schemathesis) against a real server process: every
operation, with requests that follow the description (positive) and requests that break it on purpose
(negative: wrong types, missing and extra parameters, malformed bodies).  No request may get a 500 or a
traceback.  Bounded to a few hundred examples so that it runs in CI in well under a minute; a failure
prints the request (and a curl line) to reproduce.  TLOG_FUZZ_EXAMPLES=N runs more."""

from __future__ import annotations

import asyncio
import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extras (pyproject.toml)")
requests = pytest.importorskip("requests")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.conftest import ROOT, init_log, start_server  # noqa: E402
from tests.crashkit import ORIGIN, register_keys, submission  # noqa: E402

SPEC = os.path.join(ROOT, "spec", "openapi.yaml")
EXAMPLES = int(os.environ.get("TLOG_FUZZ_EXAMPLES", "400"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A log with a writer and 300 entries (a full tile, so tiles, proofs and entries have real answers)."""
    data = str(tmp_path_factory.mktemp("fuzz") / "log")
    init_log(data, ORIGIN)
    server = start_server(data)

    async def fill() -> None:
        import aiohttp

        [key] = await register_keys(server.url, server.vkey, data, 1)
        async with aiohttp.ClientSession() as http:
            async def one(i: int) -> None:
                async with http.post(server.url + "/v1/entries",
                                     json=submission(ORIGIN, key, b'{"n": %d}' % i).request) as r:
                    assert r.status == 201
            await asyncio.gather(*(one(i) for i in range(300)))

    try:
        asyncio.run(fill())
        yield server
    finally:
        server.stop()


def test_openapi_fuzz_finds_no_server_error(fuzz_server):
    schema = schemathesis.openapi.from_path(SPEC)
    cases = st.one_of(schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      schema.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    seen: dict[str, int] = {}

    with requests.Session() as session:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def one(case) -> None:
            try:
                response = case.call(base_url=fuzz_server.url, session=session, timeout=10)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
                return  # a request the HTTP client itself refuses to send: nothing reached the server
            label = f"{case.method} {case.path}"
            seen[label] = seen.get(label, 0) + 1
            assert response.status_code < 500, (response.status_code, response.text[:300], case.as_curl_command())
            assert b"Traceback" not in response.content

        one()
    print(f"fuzzed {sum(seen.values())} requests over {len(seen)} operations: {sorted(seen.items())}")
    assert len(seen) >= 10, seen  # (almost) every operation was reached
    assert [line for line in fuzz_server.logs() if line.get("level") in ("error", "critical")] == []
