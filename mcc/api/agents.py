"""/projects/{project_id}/agents: the agents of a project."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.extensions import db
from mcc.events import publish_agent_status
from mcc.schemas.agents import AgentCreateSchema, AgentPageSchema, AgentSchema, AgentUpdateSchema
from mcc.schemas.common import PageQuerySchema, page_of
from mcc.security import requires_role
from mcc.services import agents as service, outbox

URL_PREFIX = "/projects/<uuid:project_id>/agents"
blp = Blueprint("agents", __name__, description="Agents of a project")


def with_stats(agents: list) -> list:
    stats = service.agent_stats([a.id for a in agents])
    for agent in agents:
        agent.stats = stats[agent.id]
    return agents


@blp.route("")
class Agents(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, AgentPageSchema)
    def get(self, args, project_id):
        """List the project's agents"""
        items, total = service.list_agents(project_id, args["page"], args["limit"])
        return page_of(with_stats(items), total, args["page"], args["limit"])

    @requires_role("operator")
    @blp.arguments(AgentCreateSchema)
    @blp.response(201, AgentSchema)
    def post(self, body, project_id):
        """Create an agent (operator)

        `model_config.temperature` 0.0..2.0, `max_tokens` 100..128000, `model` non-empty;
        names are unique within the project (they are how messages @mention agents).
        """
        agent = service.create_agent(project_id, body)
        db.session.commit()
        return with_stats([agent])[0]


@blp.route("/<uuid:agent_id>")
class AgentById(MethodView):
    @blp.response(200, AgentSchema)
    def get(self, project_id, agent_id):
        """Get an agent"""
        return with_stats([service.get_agent(project_id, agent_id)])[0]

    @requires_role("operator")
    @blp.arguments(AgentUpdateSchema)
    @blp.response(200, AgentSchema)
    def patch(self, body, project_id, agent_id):
        """Update an agent's configuration (operator)"""
        agent = service.update_agent(project_id, agent_id, body)
        db.session.commit()
        return with_stats([agent])[0]


@blp.route("/<uuid:agent_id>/reset")
class AgentReset(MethodView):
    @requires_role("operator")
    @blp.response(200, AgentSchema)
    def post(self, project_id, agent_id):
        """Reset an agent's memory (operator)

        Its later turns see no message from before the reset; history stays for audit.
        """
        agent = service.reset_agent(project_id, agent_id)
        db.session.commit()
        outbox.flush()  # tasks whose stage turns were cancelled went to a person
        publish_agent_status(agent)
        return with_stats([agent])[0]
