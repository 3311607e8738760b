"""Cloud Spanner types and values for LocalSpanner: wire encoding <-> SQLite storage.

Storage forms (what the SQLite database holds for each Spanner type):

- INT64: INTEGER
- FLOAT64, FLOAT32: REAL; NaN is stored as the text ``'NaN'`` (SQLite turns a NaN REAL into NULL)
- BOOL: INTEGER 0 or 1
- STRING, UUID: TEXT
- BYTES: BLOB (base64 only on the wire)
- DATE: TEXT ``YYYY-MM-DD``
- TIMESTAMP: TEXT ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` in UTC; fixed width, so text order is
  time order
- NUMERIC: TEXT, a normalized decimal (columns compare it with the SPANPOOL_NUMERIC collation)
- JSON: TEXT, normalized JSON
- ARRAY<T>: TEXT, a JSON array of the elements' storage forms, except that BYTES elements are
  base64 strings and infinities are ``9e999``/``-9e999`` (NaN is ``"NaN"``, as for scalars)
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import grpc
from google.cloud.spanner_v1.types import type as sp_type
from google.protobuf import struct_pb2

TypePb = sp_type.Type.pb()
StructTypePb = sp_type.StructType.pb()
Value = struct_pb2.Value
ListValue = struct_pb2.ListValue

TypeMsg: TypeAlias = Any
"""A ``google.spanner.v1.Type`` protobuf message."""
ValueMsg: TypeAlias = Any
"""A ``google.protobuf.Value`` message."""
Encoder: TypeAlias = Callable[[object], ValueMsg]

TYPE_CODE_UNSPECIFIED = 0
BOOL = int(sp_type.TypeCode.BOOL)
INT64 = int(sp_type.TypeCode.INT64)
FLOAT64 = int(sp_type.TypeCode.FLOAT64)
FLOAT32 = int(sp_type.TypeCode.FLOAT32)
TIMESTAMP = int(sp_type.TypeCode.TIMESTAMP)
DATE = int(sp_type.TypeCode.DATE)
STRING = int(sp_type.TypeCode.STRING)
BYTES = int(sp_type.TypeCode.BYTES)
ARRAY = int(sp_type.TypeCode.ARRAY)
STRUCT = int(sp_type.TypeCode.STRUCT)
NUMERIC = int(sp_type.TypeCode.NUMERIC)
JSON = int(sp_type.TypeCode.JSON)
UUID = int(sp_type.TypeCode.UUID)
PROTO = int(sp_type.TypeCode.PROTO)  # stored and sent as BYTES
ENUM = int(sp_type.TypeCode.ENUM)  # stored and sent as INT64
_STORED_AS = {PROTO: BYTES, ENUM: INT64}

SCALAR_NAMES: dict[str, int] = {
    "BOOL": BOOL,
    "INT64": INT64,
    "FLOAT64": FLOAT64,
    "FLOAT32": FLOAT32,
    "TIMESTAMP": TIMESTAMP,
    "DATE": DATE,
    "STRING": STRING,
    "BYTES": BYTES,
    "NUMERIC": NUMERIC,
    "JSON": JSON,
    "UUID": UUID,
}
_CODE_NAMES = {code: name for name, code in SCALAR_NAMES.items()}
_FLOATS = (FLOAT64, FLOAT32)

COMMIT_TIMESTAMP_SENTINEL = "spanner.commit_timestamp()"


class EngineError(Exception):
    """A request LocalSpanner rejects, with the gRPC status Cloud Spanner would return."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- types -------------------------------------------------------------------------------------


@functools.cache
def _scalar(code: int) -> TypeMsg:
    return TypePb(code=code)


def scalar_type(code: int) -> TypeMsg:
    """A shared ``Type`` message for a scalar type code (callers must not mutate it)."""
    return _scalar(code)


@functools.cache
def _array(element_code: int) -> TypeMsg:
    return TypePb(code=ARRAY, array_element_type=_scalar(element_code))


def array_type(element: TypeMsg) -> TypeMsg:
    """A shared ``ARRAY<element>`` type message (a new one for proto and struct elements)."""
    if element.proto_type_fqn or int(element.code) == STRUCT:
        return TypePb(code=ARRAY, array_element_type=element)
    return _array(int(element.code))


def struct_type(fields: Iterable[tuple[str, TypeMsg]]) -> TypeMsg:
    """``STRUCT<name type, ...>``."""
    pb = TypePb(code=STRUCT)
    for name, type_ in fields:
        pb.struct_type.fields.add(name=name).type_.CopyFrom(type_)
    return pb


def struct_fields(type_: TypeMsg | None) -> list[tuple[str, TypeMsg]]:
    """The (name, type) of each field of a STRUCT type (none for other types)."""
    if type_ is None or int(type_.code) != STRUCT:
        return []
    return [(field.name, field.type_) for field in type_.struct_type.fields]


def proto_type(code: int, name: str) -> TypeMsg:
    """The type of a column of a proto message (``PROTO``) or enum (``ENUM``) ``name``."""
    return TypePb(code=code, proto_type_fqn=name)


def type_key(type_: TypeMsg | None) -> tuple[int, int]:
    """A hashable summary of a (non-struct) type: (code, element code). Proto messages count
    as BYTES and enums as INT64, which is how they are stored and sent."""
    if type_ is None:
        return (TYPE_CODE_UNSPECIFIED, TYPE_CODE_UNSPECIFIED)
    code = int(type_.code)
    if code != ARRAY:
        return (_STORED_AS.get(code, code), TYPE_CODE_UNSPECIFIED)
    element = int(type_.array_element_type.code)
    return (code, _STORED_AS.get(element, element))


def type_name(type_: TypeMsg | None) -> str:
    """GoogleSQL spelling of a type, for messages: ``INT64``, ``ARRAY<STRING>``."""
    code, element = type_key(type_)
    if code == ARRAY:
        return f"ARRAY<{_CODE_NAMES.get(element, str(element))}>"
    return _CODE_NAMES.get(code, "STRUCT" if code == STRUCT else f"type {code}")


def _unsupported(type_: TypeMsg) -> EngineError:
    return EngineError(
        grpc.StatusCode.UNIMPLEMENTED, f"Type {type_name(type_)} is not supported by LocalSpanner"
    )


# --- canonical text forms -------------------------------------------------------------------

_TIMESTAMP_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(?:(?P<utc>[Zz]|UTC)|(?P<sign>[+-])(?P<oh>\d{1,2})(?::?(?P<om>\d{2}))?)?"
)
_DATE_RE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_UTC = datetime.timezone.utc


@functools.cache
def _default_zone() -> datetime.tzinfo:
    """GoogleSQL's default time zone, used for timestamp text without an offset."""
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no time zone database on this system
        return _UTC


def _format_timestamp(moment: datetime.datetime, nanos: str) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{nanos}Z"
    )


def canonical_timestamp(text: str) -> str:
    """Storage form of a timestamp given as RFC 3339 or GoogleSQL timestamp text."""
    match = _TIMESTAMP_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"Invalid TIMESTAMP value: {text!r}")
    year, month, day, hour, minute, second, fraction = match.groups()[:7]
    try:
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
        if match["sign"]:
            offset = datetime.timedelta(hours=int(match["oh"]), minutes=int(match["om"] or 0))
            moment = moment - offset if match["sign"] == "+" else moment + offset
        elif not match["utc"]:
            moment = moment.replace(tzinfo=_default_zone()).astimezone(_UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValueError(f"Invalid TIMESTAMP value: {text!r}") from None
    return _format_timestamp(moment, (fraction or "").ljust(9, "0"))


def timestamp_now() -> str:
    """The current time in storage form."""
    now = datetime.datetime.now(_UTC)
    return _format_timestamp(now, f"{now.microsecond:06d}000")


def date_today() -> str:
    """Today's date in GoogleSQL's default time zone."""
    return datetime.datetime.now(_default_zone()).date().isoformat()


def timestamp_to_rfc3339(stored: str) -> str:
    """Wire form of a stored timestamp: RFC 3339 in UTC, trailing zero digits dropped."""
    if len(stored) != 30 or stored[19] != ".":
        stored = canonical_timestamp(stored)
    fraction = stored[20:29].rstrip("0")
    return f"{stored[:19]}.{fraction}Z" if fraction else f"{stored[:19]}Z"


def canonical_date(text: str) -> str:
    """Storage form of a DATE (``YYYY-MM-DD``)."""
    match = _DATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"Invalid DATE value: {text!r}")
    try:
        return datetime.date(*(int(part) for part in match.groups())).isoformat()
    except ValueError:
        raise ValueError(f"Invalid DATE value: {text!r}") from None


_NUMERIC_CONTEXT = decimal.Context(prec=80)


def canonical_numeric(text: str) -> str:
    """Storage form of a NUMERIC: plain decimal notation without redundant zeros."""
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise ValueError(f"Invalid NUMERIC value: {text!r}") from None
    if not number.is_finite():
        raise ValueError(f"Invalid NUMERIC value: {text!r}")
    number = number.normalize(_NUMERIC_CONTEXT)
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if exponent < -9 or len(digits) + exponent > 29:
        raise ValueError(f"NUMERIC value out of range: {text!r}")
    return "0" if number.is_zero() else format(number, "f")


def compare_numeric(left: str, right: str) -> int:
    """SQLite collation for NUMERIC columns: numeric order of decimal text."""
    try:
        a, b = decimal.Decimal(left), decimal.Decimal(right)
    except decimal.InvalidOperation:
        return (left > right) - (left < right)
    return (a > b) - (a < b)


def _reject_constant(name: str) -> object:
    raise ValueError(f"Invalid JSON number: {name}")


def normalize_json(text: str) -> str:
    """Storage form of a JSON value: compact, with object keys sorted."""
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ValueError(f"Invalid JSON value: {text!r}") from None
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_uuid(text: str) -> str:
    """Storage form of a UUID (lower-case, hyphenated)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError(f"Invalid UUID value: {text!r}") from None


def decode_bytes(text: str) -> bytes:
    """Decode a base64 BYTES value as Cloud Spanner does."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Invalid BYTES value: not base64") from None


# --- arrays ------------------------------------------------------------------------------------


def dump_array(elements: Iterable[object]) -> str:
    """Storage form of an array from its elements' storage forms."""
    parts = []
    for element in elements:
        if element is None:
            parts.append("null")
        elif isinstance(element, bool):
            parts.append("true" if element else "false")
        elif isinstance(element, float):
            if math.isfinite(element):
                parts.append(repr(element))
            elif math.isnan(element):
                parts.append('"NaN"')
            else:
                parts.append("9e999" if element > 0 else "-9e999")
        elif isinstance(element, bytes):
            parts.append('"' + base64.b64encode(element).decode("ascii") + '"')
        else:
            parts.append(json.dumps(element, ensure_ascii=False))
    return "[" + ",".join(parts) + "]"


def _sqlite_infinities(text: str) -> str:
    """SQLite's JSON functions write infinities as ``Inf``/``-Inf``: make them JSON numbers
    that parse as infinities, leaving strings alone."""
    out, i, n = [], 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("Inf", i):
            out.append("9e999")
            i += 3
        else:
            out.append(char)
            i += 1
    return "".join(out)


def load_array(stored: object) -> list[object]:
    """Elements of a stored array (see the module docstring for their forms)."""
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8")
    text = str(stored)
    if "Inf" in text:
        text = _sqlite_infinities(text)
    elements = json.loads(text)
    if not isinstance(elements, list):
        raise ValueError("Stored array value is not a JSON array")
    return elements


# --- wire -> storage -----------------------------------------------------------------------------


def _expect(type_: TypeMsg | None) -> ValueError:
    return ValueError(f"Expected {type_name(type_)}.")


def _to_int(value: ValueMsg, type_: TypeMsg) -> object:
    text = value.string_value
    if value.WhichOneof("kind") != "string_value" or not text.lstrip("-").isdigit():
        raise _expect(type_)
    number = int(text)
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"INT64 value out of range: {text}")
    return number


def _to_float(value: ValueMsg, type_: TypeMsg) -> object:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number: float = value.number_value
        return "NaN" if math.isnan(number) else number
    if kind == "string_value":
        text = value.string_value
        if text == "NaN":
            return "NaN"
        if text in ("Infinity", "-Infinity"):
            return float(text)
    raise _expect(type_)


def _to_bool(value: ValueMsg, type_: TypeMsg) -> object:
    if value.WhichOneof("kind") != "bool_value":
        raise _expect(type_)
    return bool(value.bool_value)


def _text_converter(convert: Callable[[str], object]) -> Callable[[ValueMsg, TypeMsg], object]:
    def to_storage(value: ValueMsg, type_: TypeMsg) -> object:
        if value.WhichOneof("kind") != "string_value":
            raise _expect(type_)
        return convert(value.string_value)

    return to_storage


def _to_array(value: ValueMsg, type_: TypeMsg) -> object:
    if value.WhichOneof("kind") != "list_value":
        raise _expect(type_)
    element_type = type_.array_element_type
    if int(element_type.code) == STRUCT:
        items = [_json_element(item, element_type) for item in value.list_value.values]
        return json.dumps(items, ensure_ascii=False)
    if int(element_type.code) == ARRAY:
        raise _unsupported(type_)
    return dump_array(to_storage(item, element_type) for item in value.list_value.values)


def _to_struct(value: ValueMsg, type_: TypeMsg) -> object:
    """A struct parameter by itself stands for whether it is NULL (its fields are bound one
    by one, see ``field_value``)."""
    if value.WhichOneof("kind") != "list_value":
        raise _expect(type_)
    return 1


def _json_element(value: ValueMsg, type_: TypeMsg) -> object:
    """A value inside a stored array of structs: structs and arrays as JSON lists, BYTES as
    base64 text, other values in their storage forms."""
    kind = value.WhichOneof("kind")
    if kind == "null_value" or kind is None:
        return None
    code = int(type_.code)
    if code in (STRUCT, ARRAY):
        if kind != "list_value":
            raise _expect(type_)
        items = value.list_value.values
        if code == ARRAY:
            return [_json_element(item, type_.array_element_type) for item in items]
        fields = type_.struct_type.fields
        if len(items) != len(fields):
            raise ValueError(f"Expected {len(fields)} struct fields, got {len(items)}.")
        return [_json_element(item, f.type_) for item, f in zip(items, fields, strict=True)]
    if code in (BYTES, PROTO):
        decode_bytes(value.string_value)
        return value.string_value
    stored = to_storage(value, type_)
    if isinstance(stored, float) and not math.isfinite(stored):
        return "Infinity" if stored > 0 else "-Infinity"
    return stored


def field_value(value: ValueMsg, type_: TypeMsg, path: Iterable[int]) -> tuple[ValueMsg, TypeMsg]:
    """The field of a struct value at ``path`` (field positions), and its type; a NULL value
    when a struct on the way is NULL."""
    for index in path:
        fields = type_.struct_type.fields
        if int(type_.code) != STRUCT or index >= len(fields):
            raise ValueError("No such struct field.")
        if value.WhichOneof("kind") != "list_value":
            value, type_ = NULL_VALUE, fields[index].type_
            continue
        items = value.list_value.values
        value = items[index] if index < len(items) else NULL_VALUE
        type_ = fields[index].type_
    return value, type_


def _to_untyped(value: ValueMsg, type_: TypeMsg) -> object:
    """A parameter sent without a type: infer it from the JSON kind, as Cloud Spanner does."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number: float = value.number_value
        return "NaN" if math.isnan(number) else number
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "list_value":
        return dump_array(_to_untyped(item, None) for item in value.list_value.values)
    raise ValueError("Values of this kind need an explicit type.")


_TO_STORAGE: dict[int, Callable[[ValueMsg, TypeMsg], object]] = {
    INT64: _to_int,
    FLOAT64: _to_float,
    FLOAT32: _to_float,
    BOOL: _to_bool,
    STRING: _text_converter(str),
    BYTES: _text_converter(decode_bytes),
    DATE: _text_converter(canonical_date),
    TIMESTAMP: _text_converter(canonical_timestamp),
    NUMERIC: _text_converter(canonical_numeric),
    JSON: _text_converter(normalize_json),
    UUID: _text_converter(canonical_uuid),
    ARRAY: _to_array,
    TYPE_CODE_UNSPECIFIED: _to_untyped,
}
_TO_STORAGE[PROTO] = _TO_STORAGE[BYTES]
_TO_STORAGE[STRUCT] = _to_struct
_TO_STORAGE[ENUM] = _TO_STORAGE[INT64]


def to_storage(value: ValueMsg, type_: TypeMsg | None) -> object:
    """Convert a wire value of the given type to its storage form.

    Raises ValueError for a value that does not fit the type (callers add context), and
    EngineError(UNIMPLEMENTED) for types LocalSpanner does not store.
    """
    kind = value.WhichOneof("kind")
    if kind == "null_value" or kind is None:
        return None
    converter = _TO_STORAGE.get(int(type_.code) if type_ is not None else TYPE_CODE_UNSPECIFIED)
    if converter is None:
        raise _unsupported(type_)
    return converter(value, type_)


# --- storage -> wire -----------------------------------------------------------------------------

NULL_VALUE = Value(null_value=struct_pb2.NULL_VALUE)


def _enc_int(stored: object) -> ValueMsg:
    if stored is None:
        return NULL_VALUE
    return Value(string_value=str(stored if type(stored) is int else int(stored)))  # type: ignore[call-overload]


def _enc_float(stored: object) -> ValueMsg:
    if stored is None:
        return NULL_VALUE
    number = float(stored)  # type: ignore[arg-type]
    if math.isfinite(number):
        return Value(number_value=number)
    if math.isnan(number):
        return Value(string_value="NaN")
    return Value(string_value="Infinity" if number > 0 else "-Infinity")


def _enc_bool(stored: object) -> ValueMsg:
    return NULL_VALUE if stored is None else Value(bool_value=bool(stored))


def _enc_string(stored: object) -> ValueMsg:
    if stored is None:
        return NULL_VALUE
    if isinstance(stored, bytes):
        return Value(string_value=stored.decode("utf-8", "replace"))
    return Value(string_value=stored if isinstance(stored, str) else str(stored))


def _enc_bytes(stored: object) -> ValueMsg:
    if stored is None:
        return NULL_VALUE
    raw = stored if isinstance(stored, bytes) else str(stored).encode("utf-8")
    return Value(string_value=base64.b64encode(raw).decode("ascii"))


def _enc_base64_text(stored: object) -> ValueMsg:
    """BYTES elements of a stored array are already base64 text."""
    return NULL_VALUE if stored is None else Value(string_value=str(stored))


def _enc_timestamp(stored: object) -> ValueMsg:
    if stored is None:
        return NULL_VALUE
    return Value(string_value=timestamp_to_rfc3339(str(stored)))


def _enc_numeric(stored: object) -> ValueMsg:
    if stored is None:
        return NULL_VALUE
    if isinstance(stored, str):
        return Value(string_value=stored)
    return Value(string_value=canonical_numeric(repr(stored)))


_SCALAR_ENCODERS: dict[int, Encoder] = {
    INT64: _enc_int,
    FLOAT64: _enc_float,
    FLOAT32: _enc_float,
    BOOL: _enc_bool,
    STRING: _enc_string,
    BYTES: _enc_bytes,
    DATE: _enc_string,
    TIMESTAMP: _enc_timestamp,
    NUMERIC: _enc_numeric,
    JSON: _enc_string,
    UUID: _enc_string,
}


@functools.cache
def _encoder(code: int, element: int) -> Encoder:
    if code != ARRAY:
        encoder = _SCALAR_ENCODERS.get(code)
        if encoder is None:
            raise _unsupported(TypePb(code=code))
        return encoder
    if element == BYTES:
        encode_element: Encoder = _enc_base64_text
    else:
        encode_element = _encoder(element, TYPE_CODE_UNSPECIFIED)

    def encode_array(stored: object) -> ValueMsg:
        if stored is None:
            return NULL_VALUE
        items = [encode_element(item) for item in load_array(stored)]
        return Value(list_value=ListValue(values=items))

    return encode_array


def encoder(type_: TypeMsg) -> Encoder:
    """A function turning a stored value of this type into its wire ``Value``."""
    code, element = type_key(type_)
    if code == ARRAY and element == STRUCT:
        encode_element = _json_encoder(type_.array_element_type)

        def encode_structs(stored: object) -> ValueMsg:
            if stored is None:
                return NULL_VALUE
            items = [encode_element(item) for item in load_array(stored)]
            return Value(list_value=ListValue(values=items))

        return encode_structs
    return _encoder(code, element)


def _json_encoder(type_: TypeMsg) -> Encoder:
    """An encoder of values that come out of JSON (elements of stored arrays of structs)."""
    code = int(type_.code)
    if code in (STRUCT, ARRAY):
        if code == STRUCT:
            parts = [_json_encoder(f.type_) for f in type_.struct_type.fields]
        else:
            element = _json_encoder(type_.array_element_type)

        def encode_list(item: object) -> ValueMsg:
            if item is None:
                return NULL_VALUE
            if isinstance(item, str):
                item = load_array(item)
            assert isinstance(item, list)
            if code == STRUCT:
                values = [part(x) for part, x in zip(parts, item, strict=False)]
            else:
                values = [element(x) for x in item]
            return Value(list_value=ListValue(values=values))

        return encode_list
    if code in (BYTES, PROTO):
        return _enc_base64_text
    return _encoder(_STORED_AS.get(code, code), TYPE_CODE_UNSPECIFIED)


def infer_type(values: Iterable[object]) -> TypeMsg:
    """The Spanner type of an expression column from the Python values SQLite returned."""
    kinds = {type(value) for value in values if value is not None}
    if not kinds or kinds == {int}:
        return scalar_type(INT64)  # GoogleSQL types a bare NULL as INT64
    if kinds <= {int, float}:
        return scalar_type(FLOAT64)
    if kinds == {bytes}:
        return scalar_type(BYTES)
    return scalar_type(STRING)


# --- values computed inside SQLite (GoogleSQL functions) ---------------------------------------


def format_float(number: float) -> str:
    """GoogleSQL's CAST(FLOAT64 AS STRING) text."""
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def _is_canonical_timestamp(text: str) -> bool:
    return len(text) == 30 and text[19] == "." and text[29] == "Z" and text[10] == "T"


def _round_half_away(number: float) -> int:
    if not math.isfinite(number):
        raise ValueError(f"Cannot cast {format_float(number)} to INT64")
    rounded = math.floor(abs(number) + 0.5)
    return int(rounded if number >= 0 else -rounded)


def _to_int64(value: object, source: int) -> int:
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = _round_half_away(value)
    elif isinstance(value, str):
        text = value.strip()
        if source == NUMERIC:
            number = int(decimal.Decimal(text).to_integral_value(decimal.ROUND_HALF_UP))
        else:
            try:
                negative = text.startswith("-")
                digits = text.lstrip("+-")
                number = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10)
                number = -number if negative else number
            except ValueError:
                raise ValueError(f"Bad int64 value: {value}") from None
    else:
        raise ValueError("Cannot cast BYTES to INT64")
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"INT64 value out of range: {number}")
    return number


def _to_float64(value: object) -> object:
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"Bad double value: {value}") from None
    else:
        raise ValueError("Cannot cast BYTES to FLOAT64")
    return "NaN" if math.isnan(number) else number


def _to_bool_value(value: object) -> bool:
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"Bad bool value: {value!r}")


def _to_string(value: object, source: int) -> str:
    if source == BOOL:
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("Cannot cast BYTES that are not UTF-8 to STRING") from None
    if source == TIMESTAMP and isinstance(value, str) and _is_canonical_timestamp(value):
        fraction = value[20:29].rstrip("0")
        return f"{value[:10]} {value[11:19]}{'.' + fraction if fraction else ''}+00"
    return str(value)


def cast_value(value: object, target: int, source: int) -> object:
    """GoogleSQL ``CAST(value AS target)`` on storage values (``source`` is 0 when unknown).

    Also coerces values written to TIMESTAMP, DATE, NUMERIC and JSON columns into their storage
    forms. Raises ValueError for values that do not convert.
    """
    if value is None:
        return None
    if target == INT64:
        return _to_int64(value, source)
    if target in _FLOATS:
        return _to_float64(value)
    if target == BOOL:
        return _to_bool_value(value)
    if target == STRING:
        return _to_string(value, source)
    if target == BYTES:
        return value if isinstance(value, bytes) else _to_string(value, source).encode("utf-8")
    if isinstance(value, bytes):
        raise ValueError(f"Cannot cast BYTES to {_CODE_NAMES.get(target, target)}")
    if target == TIMESTAMP:
        text = str(value)
        return text if _is_canonical_timestamp(text) else canonical_timestamp(text)
    if target == DATE:
        text = str(value)
        if source == TIMESTAMP and _is_canonical_timestamp(text):
            moment = datetime.datetime.fromisoformat(text[:19]).replace(tzinfo=_UTC)
            return moment.astimezone(_default_zone()).date().isoformat()
        return canonical_date(text)
    if target == NUMERIC:
        return canonical_numeric(repr(value) if isinstance(value, float) else str(value))
    if target == JSON:
        return normalize_json(str(value))
    if target == UUID:
        return canonical_uuid(str(value))
    raise ValueError(f"Cannot cast to {_CODE_NAMES.get(target, target)}")


_STORAGE_KINDS = {int: "INT64", float: "FLOAT64", str: "STRING", bytes: "BYTES"}


def store_value(value: object, target: int, element: int = TYPE_CODE_UNSPECIFIED) -> object:
    """Check and convert a value DML writes into a column of type ``target``.

    Unlike ``cast_value`` this refuses values of another kind (a FLOAT64 into an INT64
    column), but it accepts the text of untyped parameters, as Cloud Spanner coerces those.
    """
    if value is None:
        return None
    kind = _STORAGE_KINDS.get(type(value), type(value).__name__)
    if target == INT64:
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return _to_int64(value, STRING)
    elif target in _FLOATS:
        if isinstance(value, (int, float, str)):
            return _to_float64(value)
    elif target == BOOL:
        if isinstance(value, int) and value in (0, 1):
            return value
        if isinstance(value, str):
            return _to_bool_value(value)
    elif target == STRING:
        if isinstance(value, str):
            return value
    elif target == BYTES:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return decode_bytes(value)
    elif target == ARRAY:
        if isinstance(value, str):
            try:
                elements = json.loads(value)
            except ValueError:
                elements = None
            if isinstance(elements, list):
                if element in (TIMESTAMP, DATE, NUMERIC, JSON):
                    return dump_array(cast_value(e, element, STRING) for e in elements)
                return value
    elif not isinstance(value, bytes):
        return cast_value(value, target, STRING)
    column = _CODE_NAMES.get(target, "ARRAY")
    raise ValueError(f"Cannot write a {kind} value into a column of type {column}")
