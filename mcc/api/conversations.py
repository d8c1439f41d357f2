"""/projects/{project_id}/conversations: conversations, their agents and messages."""
from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint

from mcc.extensions import commit_keeping_loaded, db
from mcc.events import publish_conversation_status
from mcc.schemas.common import page_of
from mcc.schemas.conversations import (ConversationAgentSchema, ConversationCreateSchema, ConversationDetailSchema,
                                       ConversationPageSchema, ConversationQueryArgsSchema, ConversationSchema,
                                       ConversationUpdateSchema, MessageCreateSchema, MessagePageQuerySchema,
                                       MessagePageSchema, MessagePostedSchema)
from mcc.security import requires_role
from mcc.services import conversations as service
from mcc.services import outbox
from mcc.runtime import engine

URL_PREFIX = "/projects/<uuid:project_id>/conversations"
blp = Blueprint("conversations", __name__, description="Conversations between people and agents")


@blp.route("")
class Conversations(MethodView):
    @blp.arguments(ConversationQueryArgsSchema, location="query")
    @blp.response(200, ConversationPageSchema)
    def get(self, args, project_id):
        """List conversations, most recently active first"""
        items, total = service.list_conversations(project_id, args["page"], args["limit"], args.get("type"),
                                                  args.get("status"))
        return page_of(items, total, args["page"], args["limit"])

    @requires_role("operator")
    @blp.arguments(ConversationCreateSchema)
    @blp.response(201, ConversationSchema)
    def post(self, body, project_id):
        """Create a conversation (operator); `agent_ids` must be agents of this project"""
        conversation = service.create_conversation(project_id, current_user.id, body)
        db.session.commit()
        return conversation


@blp.route("/<uuid:conversation_id>")
class ConversationById(MethodView):
    @blp.arguments(MessagePageQuerySchema, location="query")
    @blp.response(200, ConversationDetailSchema)
    def get(self, args, project_id, conversation_id):
        """Get a conversation with its newest messages

        Messages are newest first; pass `before=<id of the last message>` for older ones.
        """
        conversation = service.get_conversation(project_id, conversation_id)
        conversation.messages, conversation.has_more = service.message_page(
            conversation.id, args.get("before"), args["limit"])
        return conversation

    @requires_role("operator")
    @blp.arguments(ConversationUpdateSchema)
    @blp.response(200, ConversationSchema)
    def patch(self, body, project_id, conversation_id):
        """Rename a conversation, or complete (status=completed) / reopen (status=active) it (operator)

        Completing cancels the turns still waiting in it.
        """
        conversation = service.update_conversation(project_id, conversation_id, body)
        db.session.commit()
        outbox.flush()  # tasks whose stage turns were cancelled went to a person
        publish_conversation_status(conversation)
        if body.get("status") == "active":
            engine.kick(conversation.id)
        return conversation


@blp.route("/<uuid:conversation_id>/messages")
class ConversationMessages(MethodView):
    @blp.arguments(MessagePageQuerySchema, location="query")
    @blp.response(200, MessagePageSchema)
    def get(self, args, project_id, conversation_id):
        """Page through messages, newest first (cursor: `before`, `limit` 1..100, default 50)"""
        conversation = service.get_conversation(project_id, conversation_id)
        items, has_more = service.message_page(conversation.id, args.get("before"), args["limit"])
        return {"items": items, "has_more": has_more}

    @requires_role("operator")
    @blp.arguments(MessageCreateSchema)
    @blp.response(201, MessagePostedSchema)
    def post(self, body, project_id, conversation_id):
        """Send a message to the conversation (operator)

        Stored, then pushed as a `message` event to the conversation's room, and the agents it
        calls on are queued to answer (@mentions, else the agent replied to, else the
        orchestrator, else the first agent). `blocked_agents` lists responders a budget block
        limit will stop.
        """
        message, queued = service.post_message(project_id, conversation_id, current_user.id, body["content"],
                                               body.get("reply_to"))
        commit_keeping_loaded()  # the event and the answer show the message as stored: no reload
        engine.announce(message, queued)
        return message


def _status_view(paused: bool, summary: str):
    @requires_role("operator")
    @blp.response(200, ConversationSchema)
    def post(self, project_id, conversation_id):
        conversation = service.set_paused(project_id, conversation_id, paused)
        db.session.commit()
        publish_conversation_status(conversation)
        if not paused:
            engine.kick(conversation.id)
        return conversation
    post.__doc__ = summary
    return post


@blp.route("/<uuid:conversation_id>/pause")
class ConversationPause(MethodView):
    post = _status_view(True, "Pause all agent activity in the conversation (operator)\n\n"
                              "Messages are still accepted and stored; no agent turn starts until resume.")


@blp.route("/<uuid:conversation_id>/resume")
class ConversationResume(MethodView):
    post = _status_view(False, "Resume agent activity in the conversation (operator)")


@blp.route("/<uuid:conversation_id>/agents")
class ConversationAgents(MethodView):
    @requires_role("operator")
    @blp.arguments(ConversationAgentSchema)
    @blp.response(200, ConversationSchema)
    def post(self, body, project_id, conversation_id):
        """Add an agent of the project to the conversation (operator)"""
        conversation = service.add_agent(project_id, conversation_id, body["agent_id"])
        db.session.commit()
        return conversation


@blp.route("/<uuid:conversation_id>/agents/<uuid:agent_id>")
class ConversationAgentById(MethodView):
    @requires_role("operator")
    @blp.response(200, ConversationSchema)
    def delete(self, project_id, conversation_id, agent_id):
        """Remove an agent from the conversation (operator)"""
        conversation = service.remove_agent(project_id, conversation_id, agent_id)
        db.session.commit()
        outbox.flush()
        return conversation
