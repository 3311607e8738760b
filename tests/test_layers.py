"""The layering rule: only ``spanpool.bridge`` touches google-cloud-spanner's internals.

Read from the source (as a reviewer would), so that a private field of the client read from a
pool, a framework adapter or a command fails here rather than at the client's next release.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "spanpool"
ALLOWED_FOLDERS = {"bridge", "testing"}  # the bridge, and LocalSpanner (a server, not a client)

# Private fields and methods of the client's objects (Client, Instance, Database, Session,
# transactions, the DB-API Connection, the official pools) that the bridge reads or changes.
CLIENT_PRIVATE = {
    "_client",
    "_client_options",
    "_client_transaction_started",
    "_emulator_host",
    "_instance",
    "_last_use_time",
    "_own_pool",
    "_read_only",
    "_release_session",
    "_route_to_leader_enabled",
    "_session_id",
    "_sessions",
    "_sessions_manager",
    "_snapshot",
    "_spanner_api",
    "_spanner_transaction_started",
    "_transaction",
    "_transaction_begin_marked",
    "_transaction_id",
}

# Where no private attribute of anything is read (the standard library's aside).
PUBLIC_ONLY = {"frameworks", "cli", "bench"}
STDLIB_PRIVATE = {("os", "_exit"), ("sys", "_getframe")}


def _modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in ALLOWED_FOLDERS
    )


def _client_names(tree: ast.Module) -> set[str]:
    """The names a module binds to google-cloud-spanner's modules and classes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("google."):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(
                alias.asname or alias.name.split(".")[0]
                for alias in node.names
                if alias.name.startswith("google.")
            )
    return names


def _root(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _private_reads(path: Path, *, own: bool = False) -> list[tuple[int, str, str]]:
    """(line, object, attribute) of every ``obj._name`` but ``self._name``/``cls._name``;
    with ``own``, also ``self._name`` inside a subclass of one of the client's classes
    (which reads the client's fields through ``self``)."""
    tree = ast.parse(path.read_text(), str(path))
    client = _client_names(tree)
    subclass_nodes: set[int] = set()
    if own:
        for cls in ast.walk(tree):
            if isinstance(cls, ast.ClassDef) and any(_root(b) in client for b in cls.bases):
                subclass_nodes.update(id(node) for node in ast.walk(cls))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        owner = _root(node.value) if isinstance(node.value, ast.Name) else ""
        if owner in ("self", "cls") and id(node) not in subclass_nodes:
            continue
        found.append((node.lineno, owner, name))
    return sorted(found)


def test_no_private_field_of_the_client_outside_the_bridge() -> None:
    offending = [
        f"{path.relative_to(PACKAGE)}:{line}: {owner or '...'}.{name}"
        for path in _modules()
        for line, owner, name in _private_reads(path, own=True)
        if name in CLIENT_PRIVATE
    ]
    assert offending == []


def test_adapters_commands_and_benchmarks_read_only_public_names() -> None:
    offending = [
        f"{path.relative_to(PACKAGE)}:{line}: {owner or '...'}.{name}"
        for path in _modules()
        if path.relative_to(PACKAGE).parts[0] in PUBLIC_ONLY
        for line, owner, name in _private_reads(path)
        if (owner, name) not in STDLIB_PRIVATE
    ]
    assert offending == []


def test_the_check_sees_a_private_read(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "from google.cloud import spanner_dbapi as official\n"
        "def f(instance, self):\n"
        "    return instance._client, self._own\n"
        "class Connection(official.Connection):\n"
        "    def close(self):\n"
        "        self._release_session()\n"
    )
    assert _private_reads(module) == [(3, "instance", "_client")]
    assert _private_reads(module, own=True) == [
        (3, "instance", "_client"),
        (6, "self", "_release_session"),
    ]
