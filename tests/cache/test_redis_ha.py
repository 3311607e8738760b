"""RedisStore where users outgrow one Redis: a Redis Cluster of 3 masters (a replica each) and a
Sentinel-watched master with its replica, all started on loopback by the tests; in each, the
master holding the pool is killed mid-run and its replica takes over."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from spanpool import CacheSessionPool, PoolTimeout, StoreError
from spanpool.bridge import client as bridge
from spanpool.cache.pool import POOL_LABEL
from spanpool.stores import RedisStore
from spanpool.testing import LocalSpanner
from spanpool.testing.redis_server import RedisCluster as Cluster
from spanpool.testing.redis_server import ask, redis_cluster, redis_sentinel

DEADLINE = 60.0  # seconds a test waits for the store to answer again after a failover


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with redis_cluster(masters=3, replicas=1, node_timeout_ms=1000) as running:
        yield running


def cluster_client(cluster: Cluster) -> Any:
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes],
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )


def new_pool(store: RedisStore, server: LocalSpanner, db_id: str, **options: Any) -> Any:
    options.setdefault("sleep_interval_seconds", 0.02)
    pool = CacheSessionPool(store, **options)
    database = server.database(db_id, pool=pool)
    return pool, database


def until_answered(step: Any) -> Any:
    """Run a pool operation until the store answers (it fails while a failover is under way)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return step()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def settle_and_clear(pool: Any, database: Any, server: LocalSpanner) -> None:
    """After a failover that may have lost the last writes: reconcile, then clear; nothing
    stays on the server."""
    until_answered(pool.reconcile)
    assert server.session_count(database.name) <= pool.max_sessions
    assert until_answered(pool.clear) is True
    assert bridge.list_sessions(database, {POOL_LABEL: pool.labels[POOL_LABEL]}) == []
    assert server.session_count(database.name) == 0


def test_every_key_of_a_pool_is_on_one_slot(cluster: Cluster, server: LocalSpanner) -> None:
    client = cluster_client(cluster)
    store = RedisStore(client, prefix="slot")
    try:
        pool, database = new_pool(store, server, "slots", max_sessions=3, min_sessions=2)
        held = pool.acquire()
        pool.release(held)
        keys = store._pool_keys(pool.key)
        port = next(node.port for node in cluster.nodes if node.running)
        slots = {int(ask(port, "CLUSTER KEYSLOT", k)) for k in keys}
        assert len(slots) == 1  # so each step is one script on one master
        master = cluster.master_for_slot(slots.pop())
        assert int(ask(master, "EXISTS", *keys)) >= 4  # idle, idle:born, idle:rec, meta, ...
        assert store.identity.startswith("redis:cluster:")
        settle_and_clear(pool, database, server)
    finally:
        store.close()
        client.close()


def churn(pool: Any, rounds: int, errors: list[BaseException], done: list[int]) -> None:
    """Check out, use and return sessions; a store error (the failover) is retried, and so is
    a full pool (a step the promoted replica never got may hold a place until reconciled)."""
    finished = 0
    deadline = time.monotonic() + DEADLINE
    while finished < rounds and time.monotonic() < deadline:
        try:
            session = pool.acquire()
        except (StoreError, PoolTimeout):
            time.sleep(0.02)
            continue
        except BaseException as exc:  # anything else fails the test
            errors.append(exc)
            return
        try:
            bridge.ping(session)
        finally:
            with contextlib.suppress(StoreError):  # kept aside, returned at the next call
                pool.release(session)
        finished += 1
    done.append(finished)


def test_a_cluster_master_killed_mid_run(cluster: Cluster, server: LocalSpanner) -> None:
    client = cluster_client(cluster)
    store = RedisStore(client, prefix="failover")
    try:
        pool, database = new_pool(store, server, "clusterfail", max_sessions=4, min_sessions=2)
        master = cluster.master_for_key(store._pool_keys(pool.key)[7])
        errors: list[BaseException] = []
        done: list[int] = []
        workers = [threading.Thread(target=churn, args=(pool, 40, errors, done)) for _ in range(3)]
        for worker in workers:
            worker.start()
        time.sleep(0.2)  # mid-run
        cluster.node(master).kill()
        promoted = cluster.wait_failover(master)
        assert promoted != master
        for worker in workers:
            worker.join(DEADLINE + 10)
        assert errors == [], errors
        assert done == [40, 40, 40], done
        # The replica took over the pool's slot: the pool works on.
        assert cluster.master_for_key(store._pool_keys(pool.key)[7]) == promoted
        session = until_answered(pool.acquire)
        pool.release(session)
        settle_and_clear(pool, database, server)
    finally:
        store.close()
        client.close()


def test_through_sentinel_a_failover_is_followed(server: LocalSpanner) -> None:
    with redis_sentinel() as watched:
        sentinel = Sentinel(watched.sentinels, socket_timeout=2.0)
        store = RedisStore(sentinel, service_name=watched.service_name)
        try:
            assert store.identity == f"redis:sentinel:{watched.service_name}/0:spanpool"
            pool, database = new_pool(store, server, "sentinel", max_sessions=3, min_sessions=2)
            pool.release(pool.acquire())
            mine = {POOL_LABEL: pool.labels[POOL_LABEL]}
            before = {listed.name for listed in bridge.list_sessions(database, mine)}
            # Replication is asynchronous: this failover waits for the replica to have it all
            # (one that does not is what reconcile() is for).
            assert ask(watched.master.port, "WAIT", 1, 10_000) == 1
            watched.master.kill()
            watched.wait_failover()
            session = until_answered(pool.acquire)  # now on the promoted replica
            # The replica had the state: the pool hands out one of its sessions and makes none.
            assert session.name in before
            assert {listed.name for listed in bridge.list_sessions(database, mine)} == before
            pool.release(session)
            settle_and_clear(pool, database, server)
        finally:
            store.close()


def test_a_sentinel_needs_the_service_name_and_other_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="service_name"):
        RedisStore(Sentinel([("127.0.0.1", 1)]))
    with pytest.raises(TypeError, match="url_or_client"):
        RedisStore(object())  # type: ignore[arg-type]
    assert isinstance(RedisStore("redis://127.0.0.1:1/0")._client, redis.Redis)
