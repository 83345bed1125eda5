"""The PostgreSQL the scale-out tests share their stores through (tests/harness/postgres.py):
it starts, takes SQLAlchemy connections through psycopg 3, and stops without a trace."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.harness.postgres import PostgresServer, postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 (Debian postgresql) not installed")


def test_a_private_cluster_serves_sqlalchemy_and_leaves_nothing_behind():
    with PostgresServer() as pg:
        url = pg.create_database("location")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (k text PRIMARY KEY, v int)"))
            conn.execute(text("INSERT INTO t VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET v = t.v + 1"))
            conn.execute(text("INSERT INTO t VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET v = t.v + 1"))
            assert conn.execute(text("SELECT v FROM t WHERE k = 'a'")).scalar_one() == 2
        engine.dispose()
        pid, where = pg.proc.pid, pg.dir
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(pid, 0)
    assert not where.exists()
