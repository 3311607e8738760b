"""The ``DatabaseAdmin`` service of LocalSpanner: databases and their schema.

Long-running operations complete before the RPC returns, so ``operation.result()`` of the
official client returns at once.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from google.cloud.spanner_admin_database_v1.types import spanner_database_admin as admin
from google.cloud.spanner_v1.testing import spanner_database_admin_pb2_grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, message

from ..control import Control
from ..errors import invalid
from ..model import Backend, DatabaseState
from .rpc import rpc, timestamp

_CREATE_DATABASE = re.compile(r"\s*CREATE\s+DATABASE\s+`?([A-Za-z0-9_\-]+)`?\s*", re.IGNORECASE)
_READY = admin.Database.State.READY
_GOOGLE_STANDARD_SQL = 1


def _pack(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


class DatabaseAdminService(spanner_database_admin_pb2_grpc.DatabaseAdminServicer):
    def __init__(self, backend: Backend, control: Control) -> None:
        self.backend = backend
        self.control = control
        self._operations = itertools.count(1)

    def _database_pb(self, db: DatabaseState) -> Any:
        return admin.Database.pb()(
            name=db.name,
            state=_READY,
            create_time=timestamp(time.time_ns()),
            database_dialect=_GOOGLE_STANDARD_SQL,
        )

    def _operation(self, name: str, metadata: message.Message, response: message.Message) -> Any:
        return operations_pb2.Operation(
            name=f"{name}/operations/op{next(self._operations)}",
            metadata=_pack(metadata),
            done=True,
            response=_pack(response),
        )

    @rpc("CreateDatabase")
    def CreateDatabase(self, request: Any, context: Any) -> Any:
        match = _CREATE_DATABASE.fullmatch(request.create_statement)
        if match is None:
            raise invalid(
                f"Invalid create statement {request.create_statement!r}: expected "
                "CREATE DATABASE `name`."
            )
        name = f"{request.parent}/databases/{match.group(1)}"
        db = self.backend.create_database(name, list(request.extra_statements))
        metadata = admin.CreateDatabaseMetadata.pb()(database=name)
        return self._operation(name, metadata, self._database_pb(db))

    @rpc("GetDatabase")
    def GetDatabase(self, request: Any, context: Any) -> Any:
        db = self.backend.database(request.name)
        return admin.Database.wrap(self._database_pb(db))

    @rpc("ListDatabases")
    def ListDatabases(self, request: Any, context: Any) -> Any:
        response = admin.ListDatabasesResponse.pb()()
        prefix = request.parent + "/databases/"
        for db in self.backend.databases():
            if db.name.startswith(prefix):
                response.databases.append(self._database_pb(db))
        return admin.ListDatabasesResponse.wrap(response)

    @rpc("UpdateDatabaseDdl")
    def UpdateDatabaseDdl(self, request: Any, context: Any) -> Any:
        db = self.backend.database(request.database)
        statements = list(request.statements)
        self.backend.update_ddl(db, statements)
        metadata = admin.UpdateDatabaseDdlMetadata.pb()(database=db.name, statements=statements)
        metadata.commit_timestamps.extend(timestamp(time.time_ns()) for _ in statements)
        return self._operation(db.name, metadata, empty_pb2.Empty())

    @rpc("GetDatabaseDdl")
    def GetDatabaseDdl(self, request: Any, context: Any) -> Any:
        db = self.backend.database(request.database)
        return admin.GetDatabaseDdlResponse.wrap(
            admin.GetDatabaseDdlResponse.pb()(statements=db.catalog.statements)
        )

    @rpc("DropDatabase")
    def DropDatabase(self, request: Any, context: Any) -> Any:
        self.backend.drop_database(request.database)
        return empty_pb2.Empty()
