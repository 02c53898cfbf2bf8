import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op torch thread per test module.

    The models under test are small: with two threads on a two-core machine that also runs the
    subprocesses of other tests, torch's threads spin against each other and run many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Administrative URLs of the local database servers (see .ci/services).
SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/",
}


@pytest.fixture(params=sorted(SERVERS))
def database_url(request):
    """The URL of a new, empty database on the local PostgreSQL or MariaDB server.

    Each test gets its own database, dropped afterwards (with any connections left to it).
    """
    import uuid

    import sqlalchemy as sa

    name = f"aquasurf_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVERS[request.param], isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    force = " WITH (FORCE)" if request.param == "postgresql" else ""
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE {name}{force}"))
    admin.dispose()
