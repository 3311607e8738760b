"""Cloud Spanner's rules for session labels, shared by the pools and LocalSpanner."""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_LABELS = 64
_KEY = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_VALUE = re.compile(r"([a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?)?")


def label_problem(labels: Mapping[str, str]) -> str | None:
    """What is wrong with ``labels`` by Cloud Spanner's rules, or None if nothing."""
    if len(labels) > MAX_LABELS:
        return f"A session can have at most {MAX_LABELS} labels, got {len(labels)}."
    for key, value in labels.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            return (
                f"Invalid label key {key!r}: keys must be 1-63 characters of lowercase letters, "
                "digits and dashes, starting with a letter and not ending with a dash."
            )
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            return (
                f"Invalid value {value!r} for label {key!r}: values must be at most 63 "
                "characters of lowercase letters, digits, underscores and dashes."
            )
    return None
