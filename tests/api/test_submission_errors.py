"""Errors at submission, over HTTP against the real API (Postgres, Redis; no worker needed):
a built-in that cannot take the input shape is refused by the API with the reason, before a
job exists (issue 17: LeNet at 1x8x8 used to be accepted and fail in the queue); and every 422
names its field exactly once, on several routes and through the Python client (it used to say
`indices: indices: ...`, or `: ...` for a check of the whole spec)."""

from __future__ import annotations

import re

import httpx
import pytest

from nads.client import Client, NadsError

POISON = {"architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"catalog": "lenet"}}
PROBE_DIRECTIONS = {"kind": "random", "count": 2}


def _jobs(client: httpx.Client) -> list[str]:
    """The caller's newest jobs (a job stored since would come first)."""
    return [j["id"] for j in client.get("/v1/jobs", params={"limit": 5}).json()["items"]]


def assert_named_once(detail: list[dict], field: str, start: str = "") -> str:
    """One error, on `field`, whose message starts with it once (and then with `start`)."""
    assert isinstance(detail, list) and len(detail) == 1, detail
    [error] = detail
    assert error["field"] == field, error
    msg = error["msg"]
    named, _, rest = msg.partition(": ")  # "training.mean, training.std: give both ..."
    assert named.split(", ")[0] == field and rest.startswith(start), msg
    assert not re.match(r"[\w.]+: ", rest), f"a second field prefix: {msg!r}"
    return msg


@pytest.mark.parametrize(("route", "body"), [
    ("/v1/jobs/nads", {"architecture": "lenet", "input_shape": [1, 8, 8], "num_networks": 4}),
    ("/v1/jobs/probe", {"architecture": "lenet", "input_shape": [1, 8, 8],
                        "directions": PROBE_DIRECTIONS}),
    ("/v1/jobs/nads", {"architecture": "resnet18", "input_shape": [3, 24, 32]}),
    ("/v1/jobs/nads", {"architecture": "vgg11", "input_shape": [3, 32, 16]}),
    ("/v1/jobs/nads", {"architecture": "densenet121", "input_shape": [3, 31, 32]}),
])
def test_a_shape_a_builtin_cannot_take_is_refused_with_the_reason(
        alice: httpx.Client, route: str, body: dict) -> None:
    before = _jobs(alice)
    r = alice.post(route, json=body)
    assert r.status_code == 422, r.text
    arch, shape = body["architecture"], tuple(body["input_shape"])
    msg = assert_named_once(r.json()["detail"], "input_shape",
                            f"{arch} cannot take input shape {shape}: ")
    assert "is below" in msg and f"{arch} takes H >= " in msg
    assert _jobs(alice) == before  # nothing stored, nothing queued


def test_the_smallest_shape_a_builtin_takes_is_accepted(alice: httpx.Client) -> None:
    r = alice.post("/v1/jobs/nads", json={"architecture": "lenet", "input_shape": [2, 16, 16],
                                          "num_networks": 2})
    assert r.status_code == 202, r.text
    assert alice.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code in (200, 202)


@pytest.mark.parametrize(("route", "body", "field", "start"), [
    # checks of the whole spec (pydantic locates them at the body: no field before the fix)
    ("/v1/jobs/nads", {"architecture": "lenet", "k": 5000}, "k", "5000 exceeds"),
    ("/v1/jobs/nads", {"architecture": "lenet", "num_networks": 3, "shards": 5}, "shards",
     "5 exceeds"),
    ("/v1/jobs/poison", {**POISON, "indices": [0, 1], "mode": "flip"}, "indices",
     "flip mode takes no poison index"),
    ("/v1/jobs/poison", {**POISON, "indices": [0], "training": {"mean": [0.5]}},
     "training.mean", "give both"),
    # nested checks that name their own field (located at the tag of a union before the fix:
    # `directions.nad: directions: ...`)
    ("/v1/jobs/probe", {"architecture": "lenet", "directions": {
        "kind": "nad", "indices": [1], "start": 1, "stop": 3}}, "directions",
     "give either indices or start and stop"),
    ("/v1/jobs/probe", {"architecture": "lenet", "directions": {
        "kind": "nad", "start": 3, "stop": 1}}, "directions.stop", "must exceed start"),
    # field checks
    ("/v1/jobs/poison", {**POISON, "indices": []}, "indices", "List should have at least 1"),
    ("/v1/jobs/nads", {"architecture": "lenet", "num_networks": 1}, "num_networks", "Input"),
])
def test_422_messages_name_the_field_once(alice: httpx.Client, route: str, body: dict,
                                           field: str, start: str) -> None:
    r = alice.post(route, json=body)
    assert r.status_code == 422, r.text
    assert_named_once(r.json()["detail"], field, start)


def test_invalid_json_and_query_and_form_errors_name_their_field_once(
        alice: httpx.Client) -> None:
    r = alice.post("/v1/jobs/nads", content=b'{"architecture": "lenet",}',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert_named_once(r.json()["detail"], "body", "not valid JSON at character 25")
    r = alice.get("/v1/jobs", params={"limit": 0})
    assert_named_once(r.json()["detail"], "limit", "Input should be greater than")
    r = alice.post("/v1/architectures", data={"name": "m", "input_shape": "1,8,8"},
                   files={"file": ("m.py", b"import torch\n")})
    assert r.status_code == 422
    assert_named_once(r.json()["detail"], "file", "not a zip archive")
    r = alice.post("/v1/architectures", data={"name": "m", "input_shape": "1,8"},
                   files={"file": ("m.py", b"import torch\n")})
    assert_named_once(r.json()["detail"], "input_shape", "'1,8' is not C,H,W")


def test_the_client_says_each_field_once(alice: httpx.Client) -> None:
    client = Client(str(alice.base_url), alice.headers["Authorization"].split()[-1])
    for kind, spec, text in (
            ("poison", {**POISON, "indices": [0, 1], "mode": "flip"},
             "indices: flip mode takes no poison index"),
            ("nads", {"architecture": "lenet", "k": 5000}, "k: 5000 exceeds"),
            ("nads", {"architecture": "lenet", "input_shape": [1, 8, 8]},
             "input_shape: lenet cannot take input shape (1, 8, 8)")):
        with pytest.raises(NadsError) as info:
            client.submit(kind, spec)
        said = str(info.value).split(": ", 1)[1]  # after "422 from <url>"
        assert said.startswith(text), said
        assert ": :" not in str(info.value) and not said.startswith(":")
        first = text.split(":")[0]
        assert said.count(f"{first}:") == 1, said
