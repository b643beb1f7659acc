"""How the Redis layers turn messages into bytes: the counterpart of ``channels_redis.serializers``.

``serializer_format`` picks a serializer from ``registry`` by name: ``"msgpack"`` (the
default) or ``"json"``, or any name a project registers with
``registry.register_serializer(name, cls)``. A serializer class takes the keywords
``symmetric_encryption_keys``, ``random_prefix_length`` and ``expiry`` and offers
``serialize(message) -> bytes`` and ``deserialize(bytes) -> message``; subclasses of
``BaseMessageSerializer`` only write ``as_bytes``/``from_bytes`` and get encryption on top.
Pickle is never offered: anyone who can write to the layer's Redis could make every
process that unpickles a message run code of their choosing.
"""

from __future__ import annotations

import abc
import json
import secrets
import threading
from collections.abc import Sequence
from typing import Any

import msgpack

from .base import BaseChannelLayer, Message
from .encryption import MessageCipher

_PICKLE_REFUSED = (
    "pickle is not offered: a message written to Redis by anyone who can reach it would run "
    "code in every process that unpickles it. Use 'msgpack' or 'json', or register a "
    "serializer of your own"
)


class SerializerDoesNotExist(KeyError):
    """No serializer is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidSerializer(TypeError, AssertionError):
    """``register_serializer`` was given something that cannot serialize and deserialize.

    Also an ``AssertionError``, which is what channels_redis raises, so code written for it
    keeps catching it; unlike an ``assert`` it is not skipped under ``python -O``."""


class BaseMessageSerializer(abc.ABC):
    """Encodes with ``as_bytes``, then encrypts (when keys are given) and prepends
    ``random_prefix_length`` random bytes; ``deserialize`` undoes it in reverse.

    ``expiry``: seconds after which an encrypted message is refused as too old (plus ten
    seconds of clock skew), as channels_redis does; None: never.
    """

    def __init__(
        self,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        random_prefix_length: int = 0,
        expiry: float | None = None,
    ) -> None:
        self.random_prefix_length = max(random_prefix_length, 0)
        self.expiry = expiry
        self.cipher = (
            MessageCipher(symmetric_encryption_keys) if symmetric_encryption_keys else None
        )

    @abc.abstractmethod
    def as_bytes(self, message: Any) -> bytes:
        """The message encoded, before encryption."""

    @abc.abstractmethod
    def from_bytes(self, data: bytes) -> Any:
        """The message decoded from ``as_bytes`` output."""

    def serialize(self, message: Any) -> bytes:
        return self.seal(self.as_bytes(message))

    def deserialize(self, data: bytes) -> Any:
        return self.from_bytes(self.unseal(data))

    def seal(self, data: bytes) -> bytes:
        """Encrypt ``as_bytes`` output (if keys were given) and prepend the random prefix."""
        if self.cipher:
            data = self.cipher.encrypt(data)
        if self.random_prefix_length:
            data = secrets.token_bytes(self.random_prefix_length) + data
        return data

    def unseal(self, data: bytes) -> bytes:
        if self.random_prefix_length:
            data = data[self.random_prefix_length :]
        if self.cipher:
            ttl = None if self.expiry is None else int(self.expiry) + 10
            data = self.cipher.decrypt(data, ttl)
        return data


class MsgPackSerializer(BaseMessageSerializer):
    """msgpack: compact, and bytes stay bytes. The default."""

    # ``msgpack.packb`` makes a Packer per call, which costs twice the packing of a small
    # message; a Packer is not for two threads at once, so each thread keeps its own. It
    # is taken out while it packs (a message whose dict subclass serializes again from
    # ``items()`` gets a Packer of its own, not the same one's half-written buffer), and
    # not put back after a failure or an output over ``KEEP_PACKER_BELOW`` bytes (a Packer
    # keeps its buffer as large as the largest message it packed).
    _packers = threading.local()
    KEEP_PACKER_BELOW = 64 * 1024

    def as_bytes(self, message: Any) -> bytes:
        idle = self._packers.__dict__
        pack = idle.pop("pack", None) or msgpack.Packer(use_bin_type=True).pack
        data: bytes = pack(message)
        if len(data) < self.KEEP_PACKER_BELOW:
            idle["pack"] = pack
        return data

    def from_bytes(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False)
        except ValueError as error:
            raise ValueError(f"Not a msgpack-encoded message: {error}") from None


class JSONSerializer(BaseMessageSerializer):
    """UTF-8 JSON, for messages other programs read too; it cannot carry bytes."""

    def as_bytes(self, message: Any) -> bytes:
        return json.dumps(message).encode("utf-8")

    def from_bytes(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as error:
            raise ValueError(f"Not a JSON-encoded message: {error}") from None


class SerializersRegistry:
    """Serializer classes by format name, as ``django.core.serializers`` keeps them."""

    def __init__(self) -> None:
        self._registry: dict[str, type] = {}

    def register_serializer(self, format: str, serializer_class: type) -> None:
        """Offer ``serializer_class`` as ``format``; ``InvalidSerializer`` unless it is a
        class with both ``serialize`` and ``deserialize``."""
        if not (
            isinstance(serializer_class, type)
            and callable(getattr(serializer_class, "serialize", None))
            and callable(getattr(serializer_class, "deserialize", None))
        ):
            raise InvalidSerializer(
                f"Serializer {format!r} must be a class with serialize() and deserialize() "
                f"methods (or a BaseMessageSerializer subclass); got {serializer_class!r}"
            )
        self._registry[format] = serializer_class

    def get_serializer(self, format: str, *args: Any, **kwargs: Any) -> Any:
        """A new instance of the serializer registered as ``format``."""
        try:
            serializer_class = self._registry[format]
        except KeyError:
            if format == "pickle":
                raise SerializerDoesNotExist(_PICKLE_REFUSED) from None
            raise SerializerDoesNotExist(
                f"No serializer {format!r}; registered: {sorted(self._registry)}"
            ) from None
        return serializer_class(*args, **kwargs)


registry = SerializersRegistry()
registry.register_serializer("msgpack", MsgPackSerializer)
registry.register_serializer("json", JSONSerializer)


def encode(layer: BaseChannelLayer, serializer: Any, message: Message, seal: bool = True) -> bytes:
    """Check ``message``, encode it and hold it to ``layer.max_message_size`` (measured
    before encryption, so the limit does not depend on the keys), then seal it; unless
    ``seal`` is False (a message that never leaves the process: read it back with
    ``decode(..., unsealed=True)``)."""
    if isinstance(serializer, MsgPackSerializer):
        layer.require_valid_message(message)  # names the path of a value msgpack refuses
    else:
        layer.require_message_shape(message)
    if isinstance(serializer, BaseMessageSerializer):
        data = layer.check_size(message, serializer.as_bytes(message))
        return serializer.seal(data) if seal else data
    data = serializer.serialize(message)
    if not isinstance(data, bytes):
        raise TypeError(f"{type(serializer).__name__}.serialize() returned {type(data).__name__}")
    return layer.check_size(message, data)


def unseal(serializer: Any, data: bytes) -> bytes:
    """``data`` decrypted, for a ``BaseMessageSerializer`` (other serializers' as it is), so
    that many readers of the same bytes decrypt once and each decodes its own copy with
    ``decode(..., unsealed=True)``. ``ValueError`` if no key opens it."""
    return serializer.unseal(data) if isinstance(serializer, BaseMessageSerializer) else data


def decode(serializer: Any, data: bytes, unsealed: bool = False) -> Message:
    """The message in ``data`` (already through ``unseal`` if ``unsealed``); ``ValueError``
    (which receivers log and skip) for anything that cannot be read, whatever the
    serializer raised."""
    try:
        if unsealed and isinstance(serializer, BaseMessageSerializer):
            message = serializer.from_bytes(data)
        else:
            message = serializer.deserialize(data)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"Not a readable message ({type(error).__name__}: {error})") from None
    if not isinstance(message, dict):
        raise ValueError(f"Not a message: decoded a {type(message).__name__}, expected a dict")
    return message
