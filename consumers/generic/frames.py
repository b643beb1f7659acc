"""The ASGI WebSocket messages a consumer sends, and what it checks of those it receives.

Plain functions with no consumer state: the close codes, building ``websocket.accept``,
``websocket.close`` and ``websocket.send`` messages, and measuring a received frame.
"""

from __future__ import annotations

from consumers.headers import Headers, encode_headers
from consumers.types import Message

CLOSE_NORMAL = 1000
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


def accept_message(subprotocol: str | None = None, headers: Headers | None = None) -> Message:
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers:
        message["headers"] = encode_headers(headers)
    return message


def close_message(code: int | None = None, reason: str | None = None) -> Message:
    message: Message = {"type": "websocket.close", "code": CLOSE_NORMAL if code is None else code}
    if reason:
        # A close frame carries at most 123 bytes of reason.
        message["reason"] = reason.encode()[:123].decode(errors="ignore")
    return message


def frame_message(text_data: str | None = None, bytes_data: bytes | None = None) -> Message:
    """A ``websocket.send``; an empty string is a frame too, only ``None`` means absent."""
    if text_data is not None:
        if not isinstance(text_data, str):
            raise TypeError(f"text_data must be a str, got {type(text_data).__name__}")
        return {"type": "websocket.send", "text": text_data}
    if bytes_data is not None:
        if not isinstance(bytes_data, bytes | bytearray):
            raise TypeError(f"bytes_data must be bytes, got {type(bytes_data).__name__}")
        return {"type": "websocket.send", "bytes": bytes(bytes_data)}
    raise ValueError("send() needs text_data or bytes_data")


def longer_than(message: Message, limit: int) -> bool:
    """Whether a ``websocket.receive`` carries more than ``limit`` bytes, measured without
    encoding text unless its length in characters leaves it open."""
    text = message.get("text")
    if text is None:
        return len(message.get("bytes") or b"") > limit
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def invalid_json(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "JSON nested too deeply"
    return str(error)
