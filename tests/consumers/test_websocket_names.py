"""The close codes ``consumers.generic.websocket`` defined before ``frames.py`` stay
importable from it, whichever module now uses them (``protocol.py`` sends 1006, 1009, 1011)."""

from consumers.generic import frames, websocket


def test_the_close_codes_websocket_py_defined_are_still_importable_from_it():
    from consumers.generic.websocket import (
        CLOSE_ABNORMAL,
        CLOSE_INTERNAL_ERROR,
        CLOSE_INVALID_PAYLOAD,
        CLOSE_NO_STATUS,
        CLOSE_NORMAL,
        CLOSE_TOO_BIG,
        CLOSE_UNSUPPORTED_DATA,
    )

    assert (CLOSE_NORMAL, CLOSE_NO_STATUS, CLOSE_ABNORMAL) == (1000, 1005, 1006)
    assert (CLOSE_UNSUPPORTED_DATA, CLOSE_INVALID_PAYLOAD) == (1003, 1007)
    assert (CLOSE_TOO_BIG, CLOSE_INTERNAL_ERROR) == (1009, 1011)
    for name in [name for name in vars(frames) if name.startswith("CLOSE_")]:
        assert getattr(websocket, name) == getattr(frames, name)
