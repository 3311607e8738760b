"""Bad arguments to every pool, in both flavours: a clear ValueError/TypeError naming the
parameter as the user wrote it, its unit, and the value given."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from spanpool import (
    AsyncBurstyPool,
    AsyncFixedSizePool,
    AsyncPingingPool,
    AsyncTransactionPingingPool,
    BurstyPool,
    FixedSizePool,
    PingingPool,
    TransactionPingingPool,
    _validate,
)
from spanpool.errors import ArgumentTypeError
from spanpool.testing import LocalSpanner, connect_async

NAN, INF = math.nan, math.inf

SIZED = {
    "FixedSizePool": (FixedSizePool, AsyncFixedSizePool),
    "PingingPool": (PingingPool, AsyncPingingPool),
    "TransactionPingingPool": (TransactionPingingPool, AsyncTransactionPingingPool),
}
FLAVOURS = pytest.mark.parametrize("flavour", [0, 1], ids=["blocking", "asyncio"])

# (pools, options, error type, message)
CASES: list[tuple[list[str], dict[str, Any], type[Exception], str]] = [
    (
        ["FixedSizePool", "PingingPool"],
        {"size": 0},
        ValueError,
        r"size must be an integer >= 1, not 0",
    ),
    (
        ["FixedSizePool", "PingingPool"],
        {"size": None},
        TypeError,
        r"size must be an integer >= 1, not None",
    ),
    (
        ["FixedSizePool", "PingingPool"],
        {"size": "3"},
        TypeError,
        r"size must be an integer >= 1, not '3' \(str\)",
    ),
    (["FixedSizePool"], {"size": True}, TypeError, "size must be an integer"),
    (["FixedSizePool"], {"size": 2.5}, TypeError, "size must be an integer"),
    (["BurstyPool"], {"target_size": 0}, ValueError, "target_size must be an integer >= 1, not 0"),
    (["BurstyPool"], {"target_size": None}, TypeError, "target_size must be an integer"),
    (
        ["FixedSizePool", "PingingPool"],
        {"default_timeout": -1},
        ValueError,
        r"default_timeout must be a number of seconds >= 0 \(or inf\), not -1",
    ),
    (
        ["FixedSizePool"],
        {"default_timeout": NAN},
        ValueError,
        "default_timeout must be a number of seconds",
    ),
    (
        ["FixedSizePool"],
        {"default_timeout": True},
        TypeError,
        "default_timeout must be a number of seconds",
    ),
    (["FixedSizePool"], {"default_timeout": "10"}, TypeError, "default_timeout"),
    (
        ["FixedSizePool", "BurstyPool"],
        {"max_age_minutes": -50},
        ValueError,
        r"max_age_minutes must be a number of minutes >= 0 \(or inf\), not -50$",
    ),
    (
        ["FixedSizePool", "BurstyPool"],
        {"max_age_minutes": NAN},
        ValueError,
        "max_age_minutes must be a number of minutes",
    ),
    (["FixedSizePool"], {"max_age_minutes": None}, TypeError, "max_age_minutes"),
    (
        ["FixedSizePool"],
        {"keepalive_minutes": 0},
        ValueError,
        "keepalive_minutes must be a number of minutes > 0, not 0",
    ),
    (["FixedSizePool"], {"keepalive_minutes": INF}, ValueError, "keepalive_minutes"),
    (
        ["PingingPool", "TransactionPingingPool"],
        {"ping_interval": -5},
        ValueError,
        "ping_interval must be a number of seconds > 0, not -5",
    ),
    (
        ["PingingPool"],
        {"ping_interval": NAN, "maintenance": True},
        ValueError,
        "ping_interval must be a number of seconds > 0, not nan",
    ),
    (["PingingPool"], {"ping_interval": INF}, ValueError, "ping_interval"),
    (["PingingPool"], {"ping_interval": 0}, ValueError, "ping_interval"),
    (
        ["FixedSizePool", "BurstyPool"],
        {"leak_threshold": -1},
        ValueError,
        "leak_threshold must be a number of seconds >= 0, not -1",
    ),
    (["FixedSizePool"], {"leak_threshold": NAN}, ValueError, "leak_threshold"),
    (["FixedSizePool"], {"leak_threshold": INF}, ValueError, "leak_threshold"),
    (["FixedSizePool"], {"clock": 5}, TypeError, "clock must be a callable"),
    (["FixedSizePool"], {"labels": {"Bad Key": "x"}}, ValueError, "label key"),
    (["BurstyPool"], {"labels": {"ok": "Not Allowed"}}, ValueError, "value"),
    (["FixedSizePool"], {"database_role": 3}, TypeError, "database_role must be a string"),
]


def _classes(name: str) -> tuple[type, type]:
    if name == "BurstyPool":
        return BurstyPool, AsyncBurstyPool
    return SIZED[name]


@FLAVOURS
@pytest.mark.parametrize(
    ("pool", "options", "error", "message"),
    [(pool, *rest) for names, *rest in CASES for pool in names],
    ids=lambda value: value if isinstance(value, str) and value.endswith("Pool") else None,
)
def test_bad_constructor_arguments_are_refused(
    flavour: int, pool: str, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    cls = _classes(pool)[flavour]
    with pytest.raises(error, match=message):
        cls(**options)


def test_wrong_types_are_also_value_errors() -> None:
    # Handlers written for the ValueError spanpool raised before keep catching them.
    with pytest.raises(ValueError, match="size"):
        FixedSizePool(size="3")  # type: ignore[arg-type]
    assert issubclass(ArgumentTypeError, TypeError)


def test_infinite_waits_and_ages_are_accepted() -> None:
    pool = FixedSizePool(size=1, default_timeout=INF, max_age_minutes=INF)
    assert pool.default_timeout == INF
    pool = FixedSizePool(size=1, default_timeout=None)  # wait for ever, as the official pool
    assert pool.default_timeout is None


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-1, ValueError, r"timeout must be a number of seconds >= 0 \(or inf\), not -1"),
        (NAN, ValueError, "timeout must be a number of seconds"),
        (True, TypeError, "timeout must be a number of seconds"),
        ("5", TypeError, r"timeout must be a number of seconds >= 0 \(or inf\), not '5' \(str\)"),
    ],
)
def test_get_timeout_is_checked_in_both_flavours(
    server: LocalSpanner, timeout: Any, error: type[Exception], message: str
) -> None:
    pool = FixedSizePool(size=1)
    server.database("blocking", pool=pool)
    with pytest.raises(error, match=message):
        pool.get(timeout=timeout)
    assert pool.get_stats()["requests_num"] == 0  # refused before touching the accounting
    pool.close()

    async def scenario() -> None:
        apool = AsyncFixedSizePool(size=1)
        await connect_async(server.endpoint, "asyncio", pool=apool)
        with pytest.raises(error, match=message):
            await apool.get(timeout=timeout)
        assert apool.get_stats()["requests_num"] == 0
        await apool.close()

    asyncio.run(scenario())


def test_the_helpers_name_parameter_unit_and_value() -> None:
    with pytest.raises(ValueError, match=r"^percent must be an integer from 1 to 100, not 0$"):
        _validate.integer("percent", 0, minimum=1, maximum=100)
    assert _validate.integer("n", 3, minimum=1) == 3
    assert _validate.number("wait", 2, unit="minutes") == 2.0
    assert _validate.timeout("timeout", None) is None
    with pytest.raises(ValueError, match=r"^wait must be a number of hours > 0, not -inf$"):
        _validate.number("wait", -INF, unit="hours", above=True)
