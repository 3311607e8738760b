"""The ``DatabaseAdmin`` service of LocalSpanner: databases and their schema.

Long-running operations complete before the RPC returns, so ``operation.result()`` of the
official client returns at once.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

import grpc
from google.cloud.spanner_admin_database_v1.types import spanner_database_admin as admin
from google.cloud.spanner_v1.testing import spanner_database_admin_pb2_grpc
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2, message

from ..control import Control
from ..errors import SpannerError, invalid
from ..model import Backend, DatabaseState
from .rpc import pack, rpc, timestamp

_CREATE_DATABASE = re.compile(r"\s*CREATE\s+DATABASE\s+`?([A-Za-z0-9_\-]+)`?\s*", re.IGNORECASE)
_OPERATION_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_READY = admin.Database.State.READY
_GOOGLE_STANDARD_SQL = 1
_POSTGRESQL = 2


class DatabaseAdminService(spanner_database_admin_pb2_grpc.DatabaseAdminServicer):
    def __init__(self, backend: Backend, control: Control) -> None:
        self.backend = backend
        self.control = control
        self._operations = itertools.count(1)
        self._used_operations: set[str] = set()
        self._lock = threading.Lock()

    def _database_pb(self, db: DatabaseState) -> Any:
        return admin.Database.pb()(
            name=db.name,
            state=_READY,
            create_time=timestamp(time.time_ns()),
            database_dialect=_GOOGLE_STANDARD_SQL,
        )

    def _operation(
        self,
        name: str,
        metadata: message.Message,
        response: message.Message,
        operation_id: str = "",
    ) -> Any:
        if operation_id:
            if _OPERATION_ID.fullmatch(operation_id) is None:
                raise invalid(
                    f"Invalid operation_id {operation_id!r}: expected a letter, then up to 127 "
                    "letters, digits and underscores"
                )
            full = f"{name}/operations/{operation_id}"
            with self._lock:
                if full in self._used_operations:
                    raise SpannerError(
                        grpc.StatusCode.ALREADY_EXISTS, f"Operation already exists: {full}"
                    )
                self._used_operations.add(full)
        else:
            full = f"{name}/operations/_auto_op{next(self._operations)}"
        return operations_pb2.Operation(
            name=full,
            metadata=pack(metadata),
            done=True,
            response=pack(response),
        )

    @rpc("CreateDatabase")
    def CreateDatabase(self, request: Any, context: Any) -> Any:
        if request.database_dialect == _POSTGRESQL:
            raise SpannerError(
                grpc.StatusCode.UNIMPLEMENTED,
                "LocalSpanner implements the GoogleSQL dialect only: PostgreSQL-dialect "
                "databases are not supported. Create the database with "
                "database_dialect=GOOGLE_STANDARD_SQL.",
            )
        match = _CREATE_DATABASE.fullmatch(request.create_statement)
        if match is None:
            raise invalid(
                f"Invalid create statement {request.create_statement!r}: expected "
                "CREATE DATABASE `name`."
            )
        name = f"{request.parent}/databases/{match.group(1)}"
        db = self.backend.create_database(
            name, list(request.extra_statements), request.proto_descriptors
        )
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
        self.backend.update_ddl(db, statements, request.proto_descriptors)
        metadata = admin.UpdateDatabaseDdlMetadata.pb()(database=db.name, statements=statements)
        metadata.commit_timestamps.extend(timestamp(time.time_ns()) for _ in statements)
        return self._operation(db.name, metadata, empty_pb2.Empty(), request.operation_id)

    @rpc("GetDatabaseDdl")
    def GetDatabaseDdl(self, request: Any, context: Any) -> Any:
        db = self.backend.database(request.database)
        return admin.GetDatabaseDdlResponse.wrap(
            admin.GetDatabaseDdlResponse.pb()(
                statements=db.catalog.statements,
                proto_descriptors=db.catalog.objects.proto_descriptors,
            )
        )

    @rpc("DropDatabase")
    def DropDatabase(self, request: Any, context: Any) -> Any:
        self.backend.drop_database(request.database)
        return empty_pb2.Empty()
