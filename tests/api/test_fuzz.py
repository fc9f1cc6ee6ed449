"""Property-based fuzzing of every endpoint of the OpenAPI schema (schemathesis), as a real
user with a real key, valid and invalid inputs: no answer may be a 5xx.

The app under fuzz has a throwaway database of its own and sends its messages to the
session's real Redis broker (a worker that takes one finds no such job in its database and drops
it, so the jobs it accepts are stored, never computed), no submission rate limit (so the fuzzer
explores past it), every other limit at its default, and is served over HTTP by uvicorn.
`FUZZ_EXAMPLES` bounds the examples per operation and mode.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterator

import hypothesis
import hypothesis.errors
import numpy as np
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from api.main import create_app
from store.migrate import upgrade
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import ServerThread, keyed_client, new_key

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_settings(databases: ThrowawayDatabases, broker_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Settings:
    url = databases.create()
    upgrade(url)
    data = tmp_path_factory.mktemp("fuzz")
    return Settings(data_dir=data, database_url=url, broker_url=broker_url,
                    blob_dir=data / "blobs", submit_rate_per_minute=0, upload_rate_per_minute=0)


class Fuzz:
    def __init__(self, schema: schemathesis.BaseSchema, ids: dict[str, str]) -> None:
        self.schema, self.ids = schema, ids


@pytest.fixture(scope="module")
def fuzz(fuzz_settings: Settings) -> Iterator[Fuzz]:
    """The schema of a live server, and ids of the fuzzer's own resources (a job, an upload)
    so that routes with a resource in their path are fuzzed past their 404 too."""
    key = new_key(fuzz_settings, "fuzzer")
    with ServerThread(create_app(fuzz_settings)) as server:
        config = SchemathesisConfig()
        config.projects.default.update(headers={"Authorization": f"Bearer {key}"},
                                       request_timeout=60)
        with keyed_client(server.url, key) as client:
            job = client.post("/v1/jobs/nads", json={"architecture": "logreg",
                                                     "input_shape": [1, 4, 4],
                                                     "num_networks": 4})
            buf = io.BytesIO()
            np.save(buf, np.eye(2, 16, dtype=np.float32))
            upload = client.post("/v1/uploads", data={"kind": "nads"},
                                 files={"file": ("n.npy", buf.getvalue())})
        assert job.status_code == 202 and upload.status_code == 201, (job.text, upload.text)
        ids = {"job_id": job.json()["id"], "upload_id": upload.json()["id"],
               "name": "nads.npy", "arch": "logreg"}
        yield Fuzz(schemathesis.openapi.from_url(server.url + "/openapi.json", config=config),
                   ids)


def _operations(schema: schemathesis.BaseSchema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_no_endpoint_answers_5xx(fuzz: Fuzz) -> None:
    """Every operation, valid (positive) and invalid (negative) inputs, `EXAMPLES` each; then
    the operations with a resource in their path once more, with the ids of real resources."""
    seen: Counter[str] = Counter()
    server_errors: list[str] = []
    operations = _operations(fuzz.schema)
    assert len(operations) >= 10, [op.label for op in operations]
    passes = [(op, mode, None) for op in operations
              for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    for op in operations:
        names = [p.name for p in op.path_parameters]
        if names and all(n in fuzz.ids for n in names):
            passes.append((op, GenerationMode.POSITIVE, {n: fuzz.ids[n] for n in names}))
    for operation, mode, path_parameters in passes:

        @hypothesis.given(operation.as_strategy(generation_mode=mode,
                                                path_parameters=path_parameters))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.generate])
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            seen[f"{response.status_code // 100}xx"] += 1
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} -> "
                                     f"{response.status_code}: {response.text[:300]}\n"
                                     f"  {case.as_curl_command()}")

        try:
            call()
        except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (no parameters)
            assert mode is GenerationMode.NEGATIVE, operation.label
    total = sum(seen.values())
    print(f"\nfuzz: {total} requests over {len(operations)} operations in {len(passes)} passes "
          f"({EXAMPLES} examples per operation and mode, positive and negative); "
          f"by status class: {dict(sorted(seen.items()))}; 5xx: {len(server_errors)}")
    assert total >= len(operations) * 2
    assert not server_errors, "\n".join(server_errors[:20])
