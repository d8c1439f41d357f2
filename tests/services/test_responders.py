"""Who answers a person's message, and who a reply hands over to (no workers: selection only)."""
from __future__ import annotations

import uuid

import pytest

from mcc.extensions import db
from mcc.models.conversation import Message
from mcc.runtime.prompts import mentioned_agents
from mcc.runtime.engine import responders_for, schedule_for_human_message


@pytest.fixture
def team(db_session):
    """A conversation with an orchestrator, an architect and two coders, in that order."""
    from mcc.services.agents import create_agent
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project

    project = create_project({"name": "Sel", "github_repo": f"octo/sel-{uuid.uuid4().hex[:6]}"})

    def agent(name, type_):
        return create_agent(project.id, {"name": name, "type": type_, "model_config": {
            "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})

    agents = {a.name: a for a in (agent("Olga", "orchestrator"), agent("Senior Architect", "architect"),
                                  agent("Cody", "coder"), agent("Cora", "coder"))}
    conversation = create_conversation(project.id, None, {"title": "Chat", "agent_ids": [
        a.id for a in agents.values()]})
    return project, conversation, agents


def _message(conversation, content, author="user", agent=None, reply_to=None) -> Message:
    message = Message(conversation_id=conversation.id, author_type=author, content=content,
                      agent_id=agent.id if agent else None, reply_to_id=reply_to.id if reply_to else None)
    db.session.add(message)
    db.session.flush()
    return message


def _names(conversation, content, **kwargs) -> list[str]:
    return [a.name for a in responders_for(_message(conversation, content, **kwargs), conversation)]


def test_a_mention_by_name_picks_that_agent(team):
    _, conversation, _ = team
    assert _names(conversation, "@Cody please write it") == ["Cody"]
    assert _names(conversation, "@cody, case does not matter") == ["Cody"]
    assert _names(conversation, "thanks @Cora.") == ["Cora"]


def test_a_mention_by_full_name_in_quotes_picks_that_agent(team):
    _, conversation, _ = team
    assert _names(conversation, 'what do you think, @"Senior Architect"?') == ["Senior Architect"]
    assert _names(conversation, '@"senior architect" again') == ["Senior Architect"]


def test_a_mention_by_type_picks_the_first_agent_of_that_type(team):
    _, conversation, _ = team
    assert _names(conversation, "@coder add tests") == ["Cody"]
    assert _names(conversation, "@architect review") == ["Senior Architect"]


def test_several_mentions_answer_in_order_of_first_mention_once_each(team):
    _, conversation, _ = team
    assert _names(conversation, "@Cora and @Olga, then @Cora again, @nobody") == ["Cora", "Olga"]


def test_without_a_mention_the_agent_replied_to_answers(team):
    _, conversation, agents = team
    said = _message(conversation, "my design", author="agent", agent=agents["Senior Architect"])
    assert _names(conversation, "why?", reply_to=said) == ["Senior Architect"]
    # A mention still wins over the reply.
    assert _names(conversation, "@Cody implement it", reply_to=said) == ["Cody"]


def test_a_reply_to_a_person_falls_back_to_the_orchestrator(team):
    _, conversation, _ = team
    person = _message(conversation, "a person's words")
    assert _names(conversation, "as I said", reply_to=person) == ["Olga"]


def test_without_mention_or_reply_the_orchestrator_answers(team):
    _, conversation, _ = team
    assert _names(conversation, "hello team") == ["Olga"]
    assert _names(conversation, "mail me at someone@example.com") == ["Olga"]  # not an agent's name


def test_without_an_orchestrator_the_first_agent_answers(team):
    _, conversation, agents = team
    agents["Olga"].is_active = False
    db.session.flush()
    assert _names(conversation, "hello team") == ["Senior Architect"]


def test_inactive_agents_are_never_chosen(team):
    _, conversation, agents = team
    agents["Cody"].is_active = False
    said = _message(conversation, "old words", author="agent", agent=agents["Cody"])
    db.session.flush()
    assert _names(conversation, "@Cody are you there?") == ["Olga"]
    assert _names(conversation, "@coder anyone?") == ["Cora"]
    assert _names(conversation, "and you?", reply_to=said) == ["Olga"]


def test_a_conversation_without_agents_has_no_responder(db_session):
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project

    project = create_project({"name": "Empty", "github_repo": f"octo/empty-{uuid.uuid4().hex[:6]}"})
    conversation = create_conversation(project.id, None, {"title": "Alone", "agent_ids": []})
    assert _names(conversation, "anyone?") == []


def test_a_reply_hands_over_to_the_agents_it_mentions_but_never_to_its_author(team):
    _, conversation, agents = team
    author = agents["Senior Architect"]
    found = mentioned_agents('@"Senior Architect" here: @Cody implement, @tester (none here) check',
                             conversation.agents, exclude=author)
    assert [a.name for a in found] == ["Cody"]


def test_a_message_queues_one_turn_per_responder_in_its_own_chain(team):
    _, conversation, _ = team
    message = _message(conversation, "@Cody and @Cora, split the work")
    turns = schedule_for_human_message(message)
    assert [(t.agent_id, t.chain_id, t.depth, t.reply_to_message_id, t.status) for t in turns] == [
        (a.id, message.id, 1, message.id, "queued") for a in responders_for(message, conversation)]


def test_mentions_beyond_the_chain_limit_are_not_queued_and_say_so(team, app, monkeypatch):
    from sqlalchemy import select

    _, conversation, _ = team
    monkeypatch.setitem(app.config, "MCC_MAX_CHAIN", 2)
    message = _message(conversation, "@Olga @Cody @Cora all of you")
    assert len(schedule_for_human_message(message)) == 2
    notes = db.session.scalars(select(Message).where(Message.conversation_id == conversation.id,
                                                     Message.author_type == "system")).all()
    assert len(notes) == 1 and "Cora" in notes[0].content and "MCC_MAX_CHAIN" in notes[0].content
