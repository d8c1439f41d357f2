"""A message as the conversation's room sees it: the REST API's ``MessageSchema``, published.

Here rather than in ``mcc/events.py`` so that ``events`` stays a leaf: serialising a message needs
the schemas (and through them the models); publishing does not.
"""
from __future__ import annotations

from mcc.events import conversation_room, publish
from mcc.schemas.conversations import MessageSchema


def publish_message(message) -> None:
    """Publish ``message`` to its conversation's room. Call only after the commit that stored it."""
    publish("message", MessageSchema().dump(message), conversation_room(message.conversation_id))
