"""Checks of parsed JSON that name the offending place in the edit spec."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rewriting.errors import EditSpecError

CURRENT_VERSION = 1
SUPPORTED_VERSIONS = (1,)


def describe_value(value: Any) -> str:
    """A value's repr, cut to 60 characters, with its type name."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def is_integer(value: Any) -> bool:
    """Whether value is an int; JSON true/false parse as bool, which is an int subclass."""
    return isinstance(value, int) and not isinstance(value, bool)


@contextmanager
def located(where: str) -> Iterator[None]:
    """Prefix errors raised inside with the place in the spec they concern."""
    try:
        yield
    except EditSpecError as error:
        raise type(error)(f"{where}: {error}") from error


def object_fields(
    data: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
) -> dict:
    """data itself, once checked to be an object with only allowed and all required fields."""
    if not isinstance(data, dict):
        raise EditSpecError(f"{where} must be a JSON object, got {describe_value(data)}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise EditSpecError(
            f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed fields: {', '.join(allowed)}"
        )
    missing = [name for name in required if name not in data]
    if missing:
        raise EditSpecError(
            f"{where} is missing required field(s) {', '.join(map(repr, missing))}"
        )
    return data


def check_json_data(value: Any, where: str) -> None:
    """Refuse values that JSON cannot hold (objects, NaN, infinities)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise EditSpecError(f"{where} must hold plain JSON data ({error})") from error


def check_version(version: Any) -> None:
    """Refuse a spec version this rewriting cannot read, or a missing one."""
    if version is None:
        raise EditSpecError(f'has no "version" field; add "version": {CURRENT_VERSION}')
    if not is_integer(version) or version not in SUPPORTED_VERSIONS:
        raise EditSpecError(
            f"version {version!r} is not supported by this rewriting; supported "
            f"version(s): {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )


def parse_json(text: str, origin: str) -> Any:
    """Parse JSON text, naming origin and the error position when it is malformed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise EditSpecError(
            f"{origin} is not valid JSON: {error.msg} at line {error.lineno} column "
            f"{error.colno} (character {error.pos})"
        ) from error
