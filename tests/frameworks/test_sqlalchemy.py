"""SQLAlchemy 2 on sqlalchemy-spanner with spanpool's creator, against LocalSpanner."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from spanpool import FixedSizePool
from spanpool.frameworks.sqlalchemy import creator
from spanpool.testing import LocalSpanner

from ._support import INSTANCE, PROJECT, client_kwargs, client_threads, session_rpcs

# sqlalchemy-spanner reads the connection fairy's deprecated `.connection` on every rollback.
pytestmark = pytest.mark.filterwarnings("ignore:The _ConnectionFairy.connection attribute")

URL = f"spanner+spanner:///projects/{PROJECT}/instances/{INSTANCE}/databases/shop"

metadata = MetaData()
products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(50), nullable=False),
    Column("price", Integer, nullable=False),
)


class Base(DeclarativeBase):
    pass


class Order(Base):
    """Its key is an identity column (sqlalchemy-spanner's default for an integer key)."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(String(50))


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture
def server() -> Iterator[LocalSpanner]:
    with LocalSpanner() as srv:
        yield srv


def _engine(server: LocalSpanner, **options: Any) -> Engine:
    spanpool_args = {key: options.pop(key) for key in ("pool", "store") if key in options}
    make = creator(URL, **spanpool_args, **client_kwargs(server.endpoint))
    engine = create_engine(URL, creator=make, **options)
    metadata.create_all(engine)
    Base.metadata.create_all(engine)
    return engine


def test_core_crud_and_transactions(server: LocalSpanner) -> None:
    engine = _engine(server)
    with engine.begin() as connection:
        connection.execute(
            insert(products),
            [{"id": 1, "name": "tea", "price": 3}, {"id": 2, "name": "cake", "price": 5}],
        )
    with engine.begin() as connection:
        connection.execute(update(products).where(products.c.id == 1).values(price=4))
        connection.execute(delete(products).where(products.c.id == 2))
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.execute(insert(products).values(id=3, name="lost", price=1))
        raise RuntimeError("rolled back")
    with engine.connect() as connection:
        rows = connection.execute(select(products.c.name, products.c.price)).all()
        assert [tuple(row) for row in rows] == [("tea", 4)]
        connection.execute(insert(products).values(id=4, name="uncommitted", price=1))
        connection.rollback()
        assert connection.execute(select(func.count()).select_from(products)).scalar() == 1
    engine.dispose()


def test_orm_crud_and_rollback_by_exception(server: LocalSpanner) -> None:
    engine = _engine(server)
    with Session(engine) as session, session.begin():
        session.add_all([Customer(id=1, name="Ada"), Customer(id=2, name="Grace")])
    with Session(engine) as session, session.begin():
        ada = session.get(Customer, 1)
        assert ada is not None
        ada.name = "Ada L."
        grace = session.get(Customer, 2)
        session.delete(grace)
    with pytest.raises(ValueError), Session(engine) as session, session.begin():
        session.add(Customer(id=3, name="Nobody"))
        session.flush()
        raise ValueError("rolled back")
    with Session(engine) as session:
        names = session.scalars(select(Customer.name).order_by(Customer.id)).all()
    assert names == ["Ada L."]
    engine.dispose()


def test_orm_keys_from_an_identity_column(server: LocalSpanner) -> None:
    engine = _engine(server)
    with Session(engine) as session, session.begin():
        orders = [Order(item=f"item-{i}") for i in range(5)]
        session.add_all(orders)
        session.flush()  # INSERT ... THEN RETURN id
        keys = [order.id for order in orders]
    assert all(key > 0 for key in keys)
    assert len(set(keys)) == 5
    with Session(engine) as session:
        assert session.get(Order, keys[3]).item == "item-3"  # type: ignore[union-attr]
    engine.dispose()


@pytest.mark.parametrize("pooled", [False, True], ids=["multiplexed", "regular-sessions"])
def test_engine_pool_churn_costs_no_session_rpc(
    server: LocalSpanner, monkeypatch: pytest.MonkeyPatch, pooled: bool
) -> None:
    session_pool = None
    if pooled:
        from spanpool.testing import REGULAR_SESSIONS_ENV

        for name, value in REGULAR_SESSIONS_ENV.items():
            monkeypatch.setenv(name, value)
        session_pool = FixedSizePool(size=4, default_timeout=10)
    options: dict[str, Any] = {"pool_size": 2, "max_overflow": 2}
    if session_pool is not None:
        options["pool"] = session_pool
    engine = _engine(server, **options)
    with engine.connect() as connection:  # warm-up: the first query makes the session
        assert connection.execute(text("SELECT 1")).scalar() == 1
    server.control.reset_counts()
    threads = client_threads()

    def checkouts(n: int) -> None:
        for _ in range(n):
            with engine.connect() as connection:
                assert connection.execute(select(func.count()).select_from(products)).scalar() == 0

    workers = [threading.Thread(target=checkouts, args=(15,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.dispose()  # closes every pooled DB-API connection
    checkouts(5)  # and new ones are as cheap
    engine.dispose()
    assert session_rpcs(server) == {}
    assert client_threads() == threads
    assert server.control.request_counts().get("ExecuteStreamingSql", 0) >= 65
    if session_pool is not None:
        assert session_pool.get_stats()["sessions_deleted"] == 0
        assert session_pool.get_stats()["pool_in_use"] == 0
        session_pool.close()


def test_creator_needs_a_database_url() -> None:
    with pytest.raises(ValueError, match="must name a database"):
        creator(f"spanner+spanner:///projects/{PROJECT}/instances/{INSTANCE}")
    with pytest.raises(TypeError, match="url"):
        creator(42)  # type: ignore[arg-type]
