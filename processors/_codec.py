"""Subtask payload codecs: JSON by default, pickle only when a job opts in.

The JSON codec keeps values exact across the wire: besides plain JSON values it carries ``bytes``
(base64) and pydantic models (by import path, revalidated on decode) inside tagged objects, so a
worker that decodes a payload gets back what the mapping worker put in.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import pickle
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from sx.processors._errors import PayloadError

__all__ = [
    "JSON_CODEC",
    "MAX_PAYLOAD_BYTES",
    "PICKLE_CODEC",
    "Codec",
    "CodecName",
    "JsonCodec",
    "PickleCodec",
    "codec_for",
]

MAX_PAYLOAD_BYTES = 65536
"""The limit on one encoded subtask payload."""

CodecName = Literal["json", "pickle"]

# A dict holding this key is one of our tagged values; a user dict that happens to hold it is wrapped
# in a "dict" tag so it round-trips too.
_TAG = "__sx__"

# One encoder for every payload: json.dumps with options builds a new encoder per call, which costs
# more than encoding a small payload.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()


@runtime_checkable
class Codec(Protocol):
    """Turns subtask values into payload bytes and back."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; raise ``PayloadError`` when it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes made by ``encode``; raise ``PayloadError`` when they are not valid."""
        ...


class JsonCodec:
    """JSON values, ``bytes`` and pydantic models; tuples come back as lists."""

    name = "json"

    def encode(self, value: Any) -> bytes:
        # Ids and names are the most common payloads: same bytes as the general path, less work.
        kind = type(value)
        if kind is int:
            try:
                return str(value).encode()
            except ValueError as exc:  # past the int-to-str digit limit
                raise PayloadError(f"cannot encode int as JSON: {exc}") from exc
        if kind is str:
            return _ENCODER.encode(value).encode()
        try:
            tree = _to_json(value, "$")
            return _ENCODER.encode(tree).encode()
        except PayloadError:
            raise
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"cannot encode {type(value).__name__} as JSON: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        text = _utf8(data)
        try:
            # Plain UTF-8 skips json.loads's encoding detection; json.loads handles the rest (a BOM,
            # UTF-16, UTF-32) or says why not.
            tree = json.loads(data) if text is None or text[:1] == "\ufeff" else _DECODER.decode(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError(f"payload is not valid JSON: {exc}") from exc
        return _from_json(tree)


class PickleCodec:
    """Any picklable value. Only for jobs that opt in: unpickling runs code named by the payload."""

    name = "pickle"

    def encode(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickle raises many types (TypeError, PicklingError, AttributeError)
            raise PayloadError(f"cannot pickle {type(value).__name__}: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise PayloadError(f"payload cannot be unpickled: {exc}") from exc


JSON_CODEC = JsonCodec()
PICKLE_CODEC = PickleCodec()


def codec_for(name: str) -> Codec:
    """The codec called ``name`` ("json" or "pickle")."""
    if name == "json":
        return JSON_CODEC
    if name == "pickle":
        return PICKLE_CODEC
    raise ValueError(f"codec={name!r}: unknown codec, use 'json' (the default) or 'pickle'")


def _utf8(data: bytes) -> str | None:
    if not isinstance(data, bytes):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _to_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{where}: {value!r} cannot be carried in JSON")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_TAG: "bytes", "b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, BaseModel):
        cls = type(value)
        if "<locals>" in cls.__qualname__:
            raise PayloadError(
                f"{where}: model {cls.__qualname__} is defined inside a function; move it to module level"
            )
        return {
            _TAG: "model",
            "type": f"{cls.__module__}:{cls.__qualname__}",
            "data": value.model_dump(mode="json"),
        }
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"{where}: dict key {key!r} is not a str; JSON keys must be strings")
            out[key] = _to_json(item, f"{where}.{key}")
        return {_TAG: "dict", "items": out} if _TAG in out else out
    if isinstance(value, (list, tuple)):
        return [_to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise PayloadError(
        f"{where}: {type(value).__name__} is not JSON-compatible; use JSON values, bytes or a pydantic "
        "model, or opt in to codec='pickle'"
    )


def _from_json(tree: Any) -> Any:
    if isinstance(tree, list):
        return [_from_json(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    tag = tree.get(_TAG)
    if tag is None:
        return {key: _from_json(item) for key, item in tree.items()}
    if tag == "bytes":
        return base64.b64decode(tree["b64"], validate=True)
    if tag == "dict":
        return {key: _from_json(item) for key, item in tree["items"].items()}
    if tag == "model":
        model = _import_model(tree["type"])
        try:
            return model.model_validate(tree["data"])
        except ValidationError as exc:
            raise PayloadError(f"payload does not validate as {tree['type']}: {exc}") from exc
    raise PayloadError(f"payload holds an unknown tag {tag!r}")


def _import_model(path: str) -> type[BaseModel]:
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise PayloadError(f"payload names model {path!r}, which cannot be imported: {exc}") from exc
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise PayloadError(f"payload names {path!r}, which is not a pydantic model")
    return target
