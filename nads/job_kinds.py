"""The names of the service's job kinds, for the client and the CLI, which must not import the
service's domain (`jobs/`: SQLAlchemy, the store) to know them. The registry itself is
`jobs.kinds.REGISTRY`; tests/nads/test_light_client.py checks that the two agree."""

from __future__ import annotations

JOB_KINDS = ("nads", "probe", "poison")  # in the order of jobs.kinds.REGISTRY
