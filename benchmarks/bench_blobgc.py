"""How long the blob collector (store/blobgc.py) takes: a pass that removes N unreferenced
blobs, and the periodic pass over a store where everything is referenced (the reconciler's cost
when there is nothing to do).

    python benchmarks/bench_blobgc.py --blobs 5000 [--sqlite]

A throwaway Postgres database (on `--pg`, dropped at the end) or a SQLite file, and a blob
directory in a temporary folder. Half the blobs are referenced by uploads, half by nothing;
all were touched two hours ago (the default grace period is one hour). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
from sqlalchemy import update

from jobs.kinds import pinned_blob_paths
from store.blobgc import collect
from store.blobs import BlobStore, keep_blob
from store.db import get_sessionmaker
from store.migrate import upgrade
from store.models import Blob, Upload, User, utcnow


def seed(url: str, blobs: BlobStore, count: int, tmp: Path) -> None:
    new_session = get_sessionmaker(url)
    with new_session() as session:
        user = User(name="gc-bench")
        session.add(user)
        session.commit()
        for i in range(count):
            source = tmp / "src"
            source.write_bytes(os.urandom(1024))
            sha = keep_blob(session, blobs, blobs.stage(source))
            if i % 2 == 0:
                session.add(Upload(id=uuid.uuid4().hex, user_id=user.id, kind="nads",
                                   filename="x.npy", size=1024, sha256=sha))
            if i % 500 == 499:
                session.commit()
        session.execute(update(Blob).values(touched_at=utcnow() - timedelta(hours=2)))
        session.commit()


def timed(url: str, blobs: BlobStore) -> dict:
    start = time.perf_counter()
    report = collect(get_sessionmaker(url), blobs, grace_s=3600, pins=pinned_blob_paths())
    return {"seconds": round(time.perf_counter() - start, 2), **report.as_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=5000)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--pg", default=os.environ.get("NADS_TEST_PG",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dropped = None
        if args.sqlite:
            url = f"sqlite:///{tmp / 'gc.db'}"
        else:
            dropped = f"nads_gcbench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{dropped}"')
            url = (args.pg.rsplit("/", 1)[0] + "/" + dropped).replace(
                "postgresql://", "postgresql+psycopg://", 1)
        try:
            upgrade(url)
            blobs = BlobStore(tmp / "blobs")
            seed(url, blobs, args.blobs, tmp)
            removing = timed(url, blobs)
            idle = timed(url, blobs)
            print(json.dumps({"database": "sqlite" if args.sqlite else "postgres",
                              "blobs": args.blobs, "removing_pass": removing,
                              "idle_pass": idle}, indent=1))
        finally:
            get_sessionmaker(url).kw["bind"].dispose()
            if dropped:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)')


if __name__ == "__main__":
    main()
