"""The ``InstanceAdmin`` service of LocalSpanner: instance configurations and instances.

LocalSpanner has one instance configuration, ``emulator-config``, as the official emulator. An
instance is a name under which databases live; nodes and processing units are recorded, not
enforced. Long-running operations complete before the RPC returns.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import grpc
from google.cloud.spanner_admin_instance_v1.types import spanner_instance_admin as admin
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..control import Control
from ..errors import SpannerError, invalid
from ..model import Backend, InstanceState
from .rpc import listed, pack, rpc, timestamp

SERVICE = "google.spanner.admin.instance.v1.InstanceAdmin"
CONFIG_ID = "emulator-config"
_READY = 2  # Instance.State.READY and InstanceConfig.State.READY
_PROCESSING_UNITS_PER_NODE = 1000


class InstanceAdminService:
    def __init__(self, backend: Backend, control: Control) -> None:
        self.backend = backend
        self.control = control
        self._operations = itertools.count(1)

    def _instance_pb(self, instance: InstanceState) -> Any:
        return admin.Instance.pb()(
            name=instance.name,
            config=instance.config,
            display_name=instance.display_name,
            node_count=instance.node_count,
            processing_units=instance.processing_units,
            state=_READY,
            labels=instance.labels,
            create_time=timestamp(instance.create_time),
            update_time=timestamp(instance.update_time),
            edition=instance.edition,
        )

    @staticmethod
    def _config_pb(project: str) -> Any:
        return admin.InstanceConfig.pb()(
            name=f"{project}/instanceConfigs/{CONFIG_ID}",
            display_name="LocalSpanner Instance Config",
            config_type=1,  # GOOGLE_MANAGED
            state=_READY,
            replicas=[
                admin.ReplicaInfo.pb()(location="local", type_=1, default_leader_location=True)
            ],
        )

    def _operation(self, name: str, metadata: Any, response: Any) -> Any:
        return operations_pb2.Operation(
            name=f"{name}/operations/op{next(self._operations)}",
            metadata=pack(metadata),
            done=True,
            response=pack(response),
        )

    @rpc("ListInstanceConfigs")
    def ListInstanceConfigs(self, request: Any, context: Any) -> Any:
        response = admin.ListInstanceConfigsResponse.pb()()
        response.instance_configs.append(self._config_pb(request.parent))
        return response

    @rpc("GetInstanceConfig")
    def GetInstanceConfig(self, request: Any, context: Any) -> Any:
        project, _, config = request.name.partition("/instanceConfigs/")
        if config != CONFIG_ID:
            raise SpannerError(
                grpc.StatusCode.NOT_FOUND, f"Instance config not found: {request.name}"
            )
        return self._config_pb(project)

    @rpc("ListInstances")
    def ListInstances(self, request: Any, context: Any) -> Any:
        instances = self.backend.instances(request.parent)
        page, next_page_token = listed(instances, request, _matches_filter)
        return admin.ListInstancesResponse.pb()(
            instances=[self._instance_pb(instance) for instance in page],
            next_page_token=next_page_token,
        )

    @rpc("GetInstance")
    def GetInstance(self, request: Any, context: Any) -> Any:
        return self._instance_pb(self.backend.instance(request.name))

    @rpc("CreateInstance")
    def CreateInstance(self, request: Any, context: Any) -> Any:
        given = request.instance
        name = f"{request.parent}/instances/{request.instance_id}"
        if "/instanceConfigs/" not in given.config:
            raise invalid(
                f"Invalid instance config {given.config!r}: expected "
                f"{request.parent}/instanceConfigs/<id>"
            )

        nodes, units = _capacity(given.node_count, given.processing_units)
        now = time.time_ns()
        instance = self.backend.create_instance(
            InstanceState(
                name=name,
                config=given.config,
                display_name=given.display_name or request.instance_id,
                node_count=nodes,
                processing_units=units,
                labels=dict(given.labels),
                edition=given.edition,
                create_time=now,
                update_time=now,
            )
        )
        pb = self._instance_pb(instance)
        metadata = admin.CreateInstanceMetadata.pb()(
            instance=pb, start_time=timestamp(now), end_time=timestamp(now)
        )
        return self._operation(name, metadata, pb)

    @rpc("UpdateInstance")
    def UpdateInstance(self, request: Any, context: Any) -> Any:
        instance = self.backend.instance(request.instance.name)
        given = request.instance
        paths = set(request.field_mask.paths)
        if not paths:
            raise invalid("UpdateInstance needs a field_mask naming the fields to change.")
        known = {"config", "display_name", "node_count", "processing_units", "labels", "edition"}
        unknown = paths - known
        if unknown:
            raise invalid(f"UpdateInstance cannot change {', '.join(sorted(unknown))}.")
        if "config" in paths and given.config:
            instance.config = given.config
        if "display_name" in paths:
            instance.display_name = given.display_name
        if "labels" in paths:
            instance.labels = dict(given.labels)
        if "edition" in paths:
            instance.edition = given.edition
        if "node_count" in paths or "processing_units" in paths:
            instance.node_count, instance.processing_units = _capacity(
                given.node_count if "node_count" in paths else 0,
                given.processing_units if "processing_units" in paths else 0,
            )
        instance.update_time = time.time_ns()
        pb = self._instance_pb(instance)
        metadata = admin.UpdateInstanceMetadata.pb()(
            instance=pb,
            start_time=timestamp(instance.update_time),
            end_time=timestamp(instance.update_time),
        )
        return self._operation(instance.name, metadata, pb)

    @rpc("DeleteInstance")
    def DeleteInstance(self, request: Any, context: Any) -> Any:
        self.backend.delete_instance(request.name)
        return empty_pb2.Empty()


def _capacity(node_count: int, processing_units: int) -> tuple[int, int]:
    if node_count < 0 or processing_units < 0:
        raise invalid("node_count and processing_units must be >= 0")
    if node_count and processing_units:
        if processing_units != node_count * _PROCESSING_UNITS_PER_NODE:
            raise invalid("Only one of node_count and processing_units may be set.")
        return node_count, processing_units
    if processing_units:
        return processing_units // _PROCESSING_UNITS_PER_NODE, processing_units
    nodes = node_count or 1
    return nodes, nodes * _PROCESSING_UNITS_PER_NODE


def _matches_filter(instance: InstanceState, text: str) -> bool:
    """ListInstances filters: ``labels.key:value``, ``labels.key``, ``name:text`` (ANDed)."""
    for clause in text.split(" AND "):
        clause = clause.strip()
        field, _, value = clause.partition(":")
        value = value.strip().strip('"')
        if field.startswith("labels."):
            key = field[len("labels.") :]
            if key not in instance.labels or (value and instance.labels[key] != value):
                return False
        elif field == "name":
            if value not in instance.name:
                return False
        elif field == "display_name":
            if value not in instance.display_name:
                return False
        else:
            raise invalid(f"Unsupported ListInstances filter: {clause!r}")
    return True


def add_to_server(servicer: InstanceAdminService, server: grpc.Server) -> None:
    """Register ``servicer`` (there is no generated servicer base for this service)."""
    requests: dict[str, Any] = {
        "ListInstanceConfigs": admin.ListInstanceConfigsRequest,
        "GetInstanceConfig": admin.GetInstanceConfigRequest,
        "ListInstances": admin.ListInstancesRequest,
        "GetInstance": admin.GetInstanceRequest,
        "CreateInstance": admin.CreateInstanceRequest,
        "UpdateInstance": admin.UpdateInstanceRequest,
        "DeleteInstance": admin.DeleteInstanceRequest,
    }
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method),
            request_deserializer=request_type.deserialize,
            response_serializer=_serialize,
        )
        for method, request_type in requests.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data
