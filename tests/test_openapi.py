"""spec/openapi.yaml and the running server agree: every route is described and every described
operation is served (both directions), with the parameters and status codes the server really uses."""

from __future__ import annotations

import os
import re

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.conftest import ROOT
from tlog.server.app import make_app
from tlog.server.handlers import ERROR_STATUS
from tlog.server.init import init_log

SPEC = os.path.join(ROOT, "spec", "openapi.yaml")
_METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def spec() -> dict:
    with open(SPEC, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _spec_routes(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in _METHODS}


def _server_routes(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET
            continue
        out.add((route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.resource.canonical)))
    return out


async def test_routes_and_description_agree(spec, tmp_path):
    await init_log(str(tmp_path / "log"), "example.com/openapi")
    app = make_app(str(tmp_path / "log"))
    served = _server_routes(app)
    described = _spec_routes(spec)
    assert served - described == set(), "routes the description lacks"
    assert described - served == set(), "described operations the server does not have"


def test_description_is_well_formed(spec):
    assert spec["openapi"].startswith("3.1")
    ids = [op["operationId"] for item in spec["paths"].values() for m, op in item.items() if m in _METHODS]
    assert len(ids) == len(set(ids))
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            assert op.get("summary") and op.get("responses"), (method, path)
            declared = {p["name"] for p in op.get("parameters", []) if "name" in p and p.get("in") == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)
            for ref in _refs(op):
                _resolve(spec, ref)
    # Every status of the error table is described somewhere.
    statuses = {code for item in spec["paths"].values() for m, op in item.items() if m in _METHODS
                for code in op["responses"]}
    assert {str(s) for _, s in ERROR_STATUS} <= statuses


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part]
    for inner in _refs(node):
        if inner != ref:
            _resolve(spec, inner)
    return node


async def test_documented_query_parameters_are_the_ones_accepted(spec, tmp_path):
    """The search endpoint refuses unknown parameters: the description's list is the server's list."""
    await init_log(str(tmp_path / "log"), "example.com/openapi")
    server = TestServer(make_app(str(tmp_path / "log")), host="127.0.0.1")
    await server.start_server()
    try:
        op = spec["paths"]["/v1/entries"]["get"]
        names = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
        async with aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/v1/entries"), params={"colour": "red"}) as r:
                assert r.status == 400
                error = (await r.json())["error"]
        assert set(re.findall(r"'(\w+)'", error.split("known:")[1])) == names
    finally:
        await server.close()
