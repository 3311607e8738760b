"""LocalSpanner's admin services (instances, databases, schema), driven by the official client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import spanner
from google.cloud.spanner_admin_database_v1 import DatabaseDialect
from google.protobuf import descriptor_pb2

from spanpool.testing import LocalSpanner


@pytest.fixture
def strict_server() -> Iterator[LocalSpanner]:
    with LocalSpanner(strict=True) as server:
        yield server


@pytest.fixture
def client(strict_server: LocalSpanner) -> Any:
    return spanner.Client(
        project="admin-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": strict_server.endpoint},
        disable_builtin_metrics=True,
    )


def _rows(database: Any, sql: str) -> list[list[Any]]:
    with database.snapshot() as snapshot:
        return [list(row) for row in snapshot.execute_sql(sql)]


def test_instances_are_created_listed_reloaded_updated_and_deleted(client: Any) -> None:
    (config,) = client.list_instance_configs()
    assert config.name == "projects/admin-project/instanceConfigs/emulator-config"
    instance = client.instance(
        "shop", config.name, display_name="Shop", processing_units=2000, labels={"team": "a"}
    )
    assert not instance.exists()
    instance.create().result(10)
    assert instance.exists()
    with pytest.raises(exceptions.AlreadyExists):
        client.instance("shop", config.name).create().result(10)

    again = client.instance("shop")
    again.reload()
    assert (again.display_name, again.node_count, again.processing_units) == ("Shop", 2, 2000)
    assert [i.name for i in client.list_instances(filter_="labels.team:a")] == [instance.name]
    assert list(client.list_instances(filter_="labels.team:b")) == []

    again.display_name = "Shop 2"
    again.update().result(10)
    instance.reload()
    assert instance.display_name == "Shop 2"

    database = instance.database("orders")
    database.create().result(10)
    instance.delete()
    assert not instance.exists()
    assert not database.exists()


def test_postgresql_databases_are_refused_with_one_clear_error(client: Any) -> None:
    database = client.instance("i").database("pg", database_dialect=DatabaseDialect.POSTGRESQL)
    with pytest.raises(exceptions.MethodNotImplemented, match="GoogleSQL dialect only"):
        database.create()


def test_update_ddl_keeps_the_operation_id_and_refuses_it_twice(client: Any) -> None:
    database = client.instance("i").database("ops")
    database.create().result(10)
    ddl = ["CREATE TABLE T (K INT64) PRIMARY KEY (K)"]
    operation = database.update_ddl(ddl, operation_id="schema_v1")
    assert operation.operation.name.endswith("/operations/schema_v1")
    operation.result(10)
    with pytest.raises(exceptions.AlreadyExists):
        database.update_ddl(["CREATE TABLE U (K INT64) PRIMARY KEY (K)"], operation_id="schema_v1")


def _descriptors() -> bytes:
    file = descriptor_pb2.FileDescriptorProto(name="music.proto", package="music", syntax="proto3")
    message = file.message_type.add(name="SingerInfo")
    message.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64)
    enum = file.enum_type.add(name="Genre")
    enum.value.add(name="POP", number=0)
    enum.value.add(name="JAZZ", number=1)
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()


def test_views_roles_proto_bundles_and_trailing_commas_are_accepted(client: Any) -> None:
    ddl = [
        "CREATE PROTO BUNDLE (music.SingerInfo, music.Genre,)",
        "CREATE TABLE Singers (Id INT64 NOT NULL, Name STRING(MAX), Info music.SingerInfo, "
        "Genre music.Genre,) PRIMARY KEY (Id)",
        "CREATE VIEW SingerNames SQL SECURITY INVOKER AS SELECT s.Id, s.Name FROM Singers AS s",
        "CREATE ROLE reader",
        "GRANT SELECT ON TABLE Singers TO ROLE reader",
        "CREATE CHANGE STREAM Everything FOR ALL",
        "ALTER DATABASE schema SET OPTIONS (version_retention_period = '7d')",
    ]
    database = client.instance("i").database(
        "schema", ddl_statements=ddl, proto_descriptors=_descriptors()
    )
    database.create().result(10)
    with database.batch() as batch:
        batch.insert("Singers", ("Id", "Name", "Genre"), [(1, "Ada", 1), (2, "Bo", 0)])
    assert _rows(database, "SELECT Name FROM SingerNames ORDER BY Id") == [["Ada"], ["Bo"]]
    assert _rows(database, "SELECT Genre FROM Singers WHERE Id = 1") == [[1]]
    database.reload()
    assert list(database.ddl_statements) == ddl
    assert database.proto_descriptors == _descriptors()

    with pytest.raises(exceptions.NotFound, match="Proto type not found"):
        database.update_ddl(["CREATE TABLE X (K INT64, P music.Missing) PRIMARY KEY (K)"]).result(
            10
        )
    database.update_ddl(["DROP VIEW SingerNames", "DROP ROLE reader"]).result(10)
    with pytest.raises(exceptions.BadRequest, match="Table not found: SingerNames"):
        _rows(database, "SELECT * FROM SingerNames")
