"""Eager receivers for the mailbox tests (``offer_eagerly``)."""


class Counting:
    """Claims every message, handles and forgets it; counts the messages it handled and
    the claims given back to it (``release``)."""

    def __init__(self):
        self.handled = 0
        self.released = 0

    def claim(self):
        return True

    def handle(self, message):
        self.handled += 1
        return False

    def release(self):
        self.released += 1
