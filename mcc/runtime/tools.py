"""Tools agents may call (OpenAI ``tools`` format), validated before they run.

A bad call (unknown tool, arguments that are not JSON or do not fit the schema) is answered to
the model as a tool error so it can correct itself; it never crashes the turn.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable

import marshmallow as ma

from mcc.github.contents import read_rules
from mcc.services.tasks import summary

log = logging.getLogger(__name__)


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema shown to the model
    schema: type[ma.Schema]  # what we validate with
    run: Callable  # run(args, context) -> dict
    agent_types: tuple[str, ...] | None = None  # None: every agent

    def spec(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass
class ToolContext:
    turn: object
    agent: object
    conversation: object
    project: object


class _NoArgs(ma.Schema):
    class Meta:
        unknown = ma.RAISE


def _list_participants(_args: dict, ctx: ToolContext) -> dict:
    return {"agents": [{"name": a.name, "type": a.type, "mention": f'@"{a.name}"', "is_active": a.is_active}
                       for a in ctx.conversation.agents if a.id != ctx.agent.id]}


LIST_PARTICIPANTS = Tool(
    name="list_participants",
    description="List the other agents in this conversation and how to mention them to hand work over.",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
    schema=_NoArgs,
    run=_list_participants,
)

# Filled by ``load_registry``, called by ``create_app`` (so by every web process, worker and
# ``flask`` command): importing a module never changes which tools exist.
REGISTRY: dict[str, Tool] = {}


def load_registry(*tool_sets: list[Tool]) -> None:
    """The tools agents may call: the runtime's own, then each set given (the pipeline's).

    Idempotent: every call leaves the same registry for the same sets.
    """
    REGISTRY.clear()
    for tool in [LIST_PARTICIPANTS, *(tool for tools in tool_sets for tool in tools)]:
        if tool.name in REGISTRY:
            raise ValueError(f"two tools are named {tool.name!r}")
        REGISTRY[tool.name] = tool


def specs_for(agent) -> list[dict]:
    return [tool.spec() for tool in REGISTRY.values() if tool.agent_types is None or agent.type in tool.agent_types]


def run_tool_call(call: dict, turn, agent, conversation, project) -> dict:
    function = call.get("function") or {}
    name = function.get("name")
    tool = REGISTRY.get(name)
    if tool is None or (tool.agent_types is not None and agent.type not in tool.agent_types):
        return {"error": f"unknown tool {name!r}; available: {[t['function']['name'] for t in specs_for(agent)]}"}
    try:
        raw = function.get("arguments") or "{}"
        args = tool.schema().load(json.loads(raw) if isinstance(raw, str) else raw)
    except (ValueError, TypeError) as exc:
        return {"error": f"arguments are not valid JSON: {exc}"}
    except ma.ValidationError as exc:
        return {"error": "arguments do not match the tool's schema", "details": exc.normalized_messages()}
    try:
        return tool.run(args, ToolContext(turn, agent, conversation, project))
    except Exception as exc:  # the model gets the failure; the turn goes on
        log.exception("tool %s failed", name)
        return {"error": f"{name} failed: {type(exc).__name__}: {exc}"}


# What a reply message keeps of each tool call's arguments and result (characters); the turn
# (GET /turns/<id>) keeps them whole.
SHOWN_CHARS = 2000


def calls_of(tool_log: list | None, limit: int | None = None) -> list[dict]:
    """The tool calls of a turn's log, in order: name, arguments (JSON text), call id and result.
    With ``limit``, arguments and result are JSON text cut to that many characters (for display)."""
    def cut(value):
        if limit is None:
            return value
        text = value if isinstance(value, str) else json.dumps(value)
        return text if len(text) <= limit else text[:limit] + "…"

    return [{"name": (entry["call"].get("function") or {}).get("name") or entry["call"].get("name"),
             "arguments": cut((entry["call"].get("function") or {}).get("arguments")),
             "call_id": entry["call"].get("id"), "result": cut(entry.get("result"))}
            for entry in (tool_log or []) if "call" in entry]


def current_task_summary(turn) -> dict | None:
    """The task a turn serves ({id, title}), for agent_status events."""
    return summary(turn.task_id)


def rules_text(agent, project) -> str | None:
    """The text of the agent's rules file in the project's repository (read through GitHub at the
    default branch, cached briefly); None without a rules file or when it cannot be read."""
    return read_rules(project, agent.rules_file_path)
