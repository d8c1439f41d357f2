"""The turn engine: who answers, in what order, through which gate, recorded exactly once.

A turn is one agent answering one message. Turns of a conversation run one at a time, oldest
first, one per ``pump(conversation_id)`` job under a conversation lock; an agent runs one turn at a
time anywhere (agent lock). Every LLM call passes the call gate (emergency pause) first. A turn
is claimed with a conditional UPDATE, so a redelivered job cannot run it twice, and its reply is
stored in the same transaction that marks it succeeded.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from decimal import Decimal

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from mcc.extensions import commit_keeping_loaded, db
from mcc.llm.gateway import CancelToken, Gateway, LLMCancelled, LLMError, LLMResult, LLMSettings
from mcc.logging_setup import job_context
from mcc.models.agent import Agent
from mcc.models.conversation import Conversation, Message
from mcc.models.project import Project
from mcc.models.turn import LedgerEntry, Turn
from mcc.models.types import utcnow
from mcc.events import conversation_room, publish, publish_agent_status
from mcc.services import breakers, budget, emergency, outbox
from mcc.runtime import cancellation, gate, tools
from mcc.runtime.feed import publish_message
from mcc.pipeline import stages
from mcc.services.notifications import notify
from mcc.runtime.prompts import build_messages, mentioned_agents
from mcc.runtime.scheduling import kick

log = logging.getLogger(__name__)

LOCK_TTL = 30.0


def _cfg(name: str):
    return current_app.config[name]


# --- scheduling --------------------------------------------------------------------------------

def responders_for(message: Message, conversation: Conversation) -> list[Agent]:
    """@mentioned agents; else the agent replied to; else the orchestrator; else the first agent."""
    agents = [a for a in conversation.agents if a.is_active]
    if not agents:
        return []
    mentioned = mentioned_agents(message.content, agents)
    if mentioned:
        return mentioned
    if message.reply_to_id is not None:
        parent = db.session.scalar(select(Message).where(Message.id == message.reply_to_id))
        if parent is not None and parent.author_type == "agent":
            replied = next((a for a in agents if a.id == parent.agent_id), None)
            if replied is not None:
                return [replied]
    return [next((a for a in agents if a.type == "orchestrator"), agents[0])]


def _chain_size(chain_id: uuid.UUID) -> int:
    return db.session.scalar(select(func.count()).select_from(Turn).where(Turn.chain_id == chain_id))


def _system_message(conversation_id: uuid.UUID, content: str, meta: dict | None = None) -> Message:
    message = Message(conversation_id=conversation_id, author_type="system", content=content, meta=meta)
    db.session.add(message)
    db.session.flush()
    return message


def _end_stage(turn: Turn, agent: Agent, failure: str | None = None) -> None:
    """Let the pipeline act on a pipeline turn's end; a bug there must not keep the turn from ending."""
    if turn.task_id is None:
        return
    position = outbox.mark()
    try:
        with db.session.begin_nested():
            stages.stage_turn_ended(turn, agent, failure)
    except Exception:
        outbox.discard_since(position)
        log.exception("the pipeline could not act on the end of turn %s", turn.id)


def _add_turns(conversation: Conversation, agents: list[Agent], chain_id: uuid.UUID, depth: int,
               reply_to: Message, task_id: uuid.UUID | None = None) -> tuple[list[Turn], list[Message]]:
    """Create turns within the chain limit; past it, one system message says the chain stopped."""
    if not agents:
        return [], []
    # A person's message starts its chain (depth 1): nothing to count yet.
    room = _cfg("MCC_MAX_CHAIN") - (_chain_size(chain_id) if depth > 1 else 0)
    turns = [Turn(conversation_id=conversation.id, agent_id=a.id, chain_id=chain_id, depth=depth,
                  reply_to_message_id=reply_to.id, task_id=task_id) for a in agents[:max(room, 0)]]
    db.session.add_all(turns)
    notices = []
    if len(agents) > max(room, 0):
        skipped = ", ".join(a.name for a in agents[max(room, 0):])
        notices.append(_system_message(
            conversation.id,
            f"Stopped the hand-off to {skipped}: {_cfg('MCC_MAX_CHAIN')} agent turns already followed this "
            "message (MCC_MAX_CHAIN). Send a new message to continue.",
            {"reason": "chain_limit", "chain_id": str(chain_id)}))
    db.session.flush()
    return turns, notices


def schedule_for_human_message(message: Message) -> list[Turn]:
    """Queue the turns a person's message calls for. The caller commits, then calls ``kick``."""
    conversation = db.session.get(Conversation, message.conversation_id)
    turns, notices = _add_turns(conversation, responders_for(message, conversation), message.id, 1, message)
    for notice in notices:  # too many agents mentioned: people see why some will not answer
        outbox.later(publish_message, notice)
    return turns


def announce(message: Message, queued: list[Turn]) -> None:
    """After the commit of a person's message: push it live (with what it led to) and start its turns."""
    publish_message(message)
    outbox.flush()
    if queued:
        kick(message.conversation_id)


# --- the pump -----------------------------------------------------------------------------------

class _Heartbeat:
    """Keeps locks and the turn's liveness mark fresh while a (possibly long) LLM call blocks."""

    def __init__(self, locks: list, turn_id: uuid.UUID):
        self.locks, self.turn_id = locks, turn_id
        self.stopped = threading.Event()
        self.interval = _cfg("MCC_TURN_HEARTBEAT_SECONDS")
        self.alive_ttl = self.interval * 3
        self.app = current_app._get_current_object()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{turn_id}")

    def __enter__(self):
        gate.mark_alive(f"turn:{self.turn_id}", self.alive_ttl)
        self.thread.start()
        return self

    def _run(self):
        with self.app.app_context():
            while not self.stopped.wait(self.interval):
                try:
                    gate.mark_alive(f"turn:{self.turn_id}", self.alive_ttl)
                    for lock in self.locks:
                        lock.extend()
                except Exception:
                    log.warning("heartbeat for turn %s failed", self.turn_id, exc_info=True)

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=5)
        gate.clear_alive(f"turn:{self.turn_id}")


def _next_open_turn(conversation_id: uuid.UUID) -> Turn | None:
    return db.session.scalars(
        select(Turn).where(Turn.conversation_id == conversation_id, Turn.status.in_(("queued", "held", "running")))
        .order_by(Turn.created_at, Turn.id).limit(1)).first()


def _hold_queued(conversation_id: uuid.UUID) -> None:
    db.session.execute(update(Turn).where(Turn.conversation_id == conversation_id, Turn.status == "queued")
                       .values(status="held"))


def pump(conversation_id: uuid.UUID) -> str:
    """Run the conversation's oldest queued turn, then queue a job for the next one. The job body.

    One turn per job: a long hand-off chain goes back to the end of the queue after each turn,
    so it cannot keep a worker from every other conversation.
    """
    lock = gate.try_lock(f"conversation:{conversation_id}", LOCK_TTL)
    if lock is None:
        return "busy"
    try:
        outcome = _step(conversation_id, lock)
    finally:
        db.session.rollback()
        lock.release()
    if outcome == "agent_busy":
        kick(conversation_id, delay=_cfg("MCC_AGENT_BUSY_RETRY_SECONDS"))
    elif outcome in ("ran", "idle"):
        # The next turn; or one queued while we were releasing the lock, which would otherwise
        # wait for nobody.
        turn = _next_open_turn(conversation_id)
        if turn is not None and turn.status == "queued":
            kick(conversation_id)
    db.session.remove()
    return outcome


def _held_reason(conversation: Conversation) -> str | None:
    if conversation.status == "paused":
        return "conversation paused"
    if emergency.current_state():
        return "emergency pause"
    return None


def _step(conversation_id: uuid.UUID, conversation_lock) -> str:
    db.session.rollback()  # see what other processes committed
    turn = _next_open_turn(conversation_id)
    if turn is None or turn.status == "running":  # a running one here was abandoned: the reaper's
        return "idle"
    if turn.status == "held":
        return "held"
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or conversation.status == "completed":
        db.session.execute(update(Turn).where(Turn.conversation_id == conversation_id,
                                              Turn.status.in_(("queued", "held"))).values(status="cancelled"))
        db.session.commit()
        return "idle"
    if _held_reason(conversation):
        _hold_queued(conversation_id)
        db.session.commit()
        return "held"
    agent = db.session.get(Agent, turn.agent_id)
    if agent is None or not agent.is_active:
        turn.status, turn.finished_at, turn.error = "cancelled", utcnow(), "agent inactive"
        db.session.commit()
        return "ran"
    agent_lock = gate.try_lock(f"agent:{turn.agent_id}", LOCK_TTL)
    if agent_lock is None:
        return "agent_busy"
    try:
        # The agent's row first, then the turn's: the order an agent reset locks them in.
        agent.status = "working"
        db.session.flush()
        claimed = db.session.execute(
            update(Turn).where(Turn.id == turn.id, Turn.status == "queued")
            .values(status="running", attempts=Turn.attempts + 1, started_at=utcnow())
            .returning(Turn.attempts, Turn.started_at).execution_options(synchronize_session=False)).first()
        if claimed is None:
            db.session.rollback()
            return "ran"  # someone else took it; look again
        for name, value in (("status", "running"), ("attempts", claimed.attempts), ("started_at", claimed.started_at)):
            set_committed_value(turn, name, value)
        # The claim and the agent's status in one transaction; what this step loaded stays loaded
        # (the turn's rows are this worker's now; the conversation's status is read before each call).
        commit_keeping_loaded()
        with job_context(turn_id=turn.id), _Heartbeat([conversation_lock, agent_lock], turn.id):
            log.info("turn %s of agent %s started (attempt %s)", turn.id, turn.agent_id, turn.attempts)
            _execute(turn, conversation, agent)
    finally:
        agent_lock.release()
    return "ran"


# --- one turn -----------------------------------------------------------------------------------

def _gateway() -> Gateway:
    return Gateway(LLMSettings.from_config(current_app.config))


def _typing(conversation_id, agent_id, is_typing: bool) -> None:
    publish("agent_typing", {"conversation_id": str(conversation_id), "agent_id": str(agent_id),
                             "is_typing": is_typing}, conversation_room(conversation_id))


def _add_ledger_row(turn: Turn, conversation: Conversation, agent: Agent, call_index: int, result: LLMResult,
                    replies: int = 0) -> LedgerEntry:
    """The call's ledger row and its rollup (``replies``: the reply stored with it), not committed."""
    entry = LedgerEntry(turn_id=turn.id, attempt=turn.attempts, call_index=call_index,
                        project_id=conversation.project_id, agent_id=agent.id, conversation_id=conversation.id,
                        task_id=turn.task_id, model=result.model, tokens_in=result.tokens_in,
                        tokens_out=result.tokens_out, cost_usd=result.cost_usd, price_known=result.price_known,
                        cost_source=result.cost_source, simulated=result.simulated)
    db.session.add(entry)
    db.session.flush()
    budget.record_call(entry, result, messages=replies)
    return entry


def _count_spend(conversation: Conversation, entry: LedgerEntry, reservation) -> None:
    """After the row's commit: the reservation released, the spend counted; alerts (and their
    actions) committed and out."""
    alerts = budget.settle(reservation, entry) + breakers.check_velocity(conversation.project_id)
    db.session.commit()  # expires: what runs next (tools, the next call) reads what others changed meanwhile
    for alert in alerts:
        publish(alert["event"], alert["data"], alert.get("room"))


def _settle_call(turn: Turn, conversation: Conversation, agent: Agent, call_index: int, result: LLMResult,
                 reservation) -> LedgerEntry:
    """A call that did not end the turn: on record in its own transaction (a call that cost money
    is on record whatever follows), then counted."""
    entry = _add_ledger_row(turn, conversation, agent, call_index, result)
    db.session.commit()
    _count_spend(conversation, entry, reservation)
    return entry


def _hold_turn(turn: Turn, agent: Agent, transcript: list, reason: str) -> None:
    turn.status = "held"
    turn.transcript = transcript
    agent.status = "idle"  # not working while held; _execute publishes it
    db.session.commit()
    cancellation.forget(turn.id)  # a stop asked for the pause's sake ends with the hold
    log.info("turn %s held (%s)", turn.id, reason)


def _execute(turn: Turn, conversation: Conversation, agent: Agent) -> None:
    """Run a claimed turn (its agent already marked working) to its end: answered, held, refused,
    cancelled or failed, on record, and announced."""
    project = db.session.get(Project, conversation.project_id)
    current_task = tools.current_task_summary(turn)
    publish_agent_status(agent, current_task)
    _typing(conversation.id, agent.id, True)
    attempt = turn.attempts
    try:
        _converse(turn, conversation, agent, project)
    except LLMError as exc:
        _fail_own_attempt(turn, attempt, f"the LLM gateway failed: {exc}")
    except Exception as exc:  # a bug must not leave the turn "running" forever
        db.session.rollback()  # first: after a failed flush even turn.id cannot be read
        log.exception("turn %s crashed", turn.id)
        outbox.discard()  # nothing the rolled-back work queued may be announced
        _fail_own_attempt(turn, attempt, f"internal error ({type(exc).__name__})")
    finally:
        _typing(turn.conversation_id, turn.agent_id, False)
        agent = db.session.get(Agent, turn.agent_id)
        if agent is not None:
            publish_agent_status(agent, None)


def _converse(turn: Turn, conversation: Conversation, agent: Agent, project: Project) -> None:
    """Call the model; while it asks for tools, run them and call it again; end the turn.

    Each step ends the turn itself when it must stop (held, refused, cancelled): it then returns
    None, and so does this."""
    transcript = turn.transcript
    if not transcript:
        reply_to_seq = db.session.scalar(select(Message.seq).where(Message.id == turn.reply_to_message_id))
        transcript = build_messages(agent, project, conversation, reply_to_seq,
                                    _cfg("MCC_CONTEXT_TOKENS"), tools.rules_text(agent, project))
    tool_specs = tools.specs_for(agent)
    tool_log = list(turn.tool_log or [])
    steps_done = sum(1 for entry in tool_log if entry.get("step_end"))
    gateway = _gateway()
    call_index = 0
    while True:
        called = _call_model(turn, conversation, agent, gateway, transcript, tool_specs, call_index)
        if called is None:
            return
        result, reservation = called
        if not result.tool_calls or steps_done >= _cfg("MCC_MAX_TOOL_STEPS"):
            _succeed(turn, conversation, agent, result, call_index, reservation, steps_done)
            return
        _settle_call(turn, conversation, agent, call_index, result, reservation)
        call_index += 1
        transcript = _run_tools(turn, conversation, agent, project, result, transcript, tool_log, steps_done)
        if transcript is None:
            return
        steps_done += 1


def _call_model(turn: Turn, conversation: Conversation, agent: Agent, gateway: Gateway, transcript: list,
                tool_specs: list, call_index: int) -> tuple[LLMResult, budget.Reservation] | None:
    """One call through the gate: the conversation not paused, no stop asked, the emergency
    switch off and the budget reserved first. Returns the answer and its reservation (not yet on
    record), or None when the turn was held, refused or cancelled instead."""
    db.session.refresh(conversation, ["status"])  # a pause by a person since the last look
    if conversation.status == "paused":
        _hold_turn(turn, agent, transcript, "conversation paused")
        return None
    stop_reason = cancellation.pending_reason(turn.id)
    if stop_reason:
        _cancelled(turn, conversation, agent, stop_reason, None, transcript)
        return None
    reservation, checks = budget.plan_reservation(conversation.project_id, agent.id, agent.model, transcript,
                                                  agent.max_tokens, turn.task_id)
    try:
        call_id = gate.acquire_llm_call(
            emergency.state_from_database, [(key, limit, amount) for key, limit, amount, _, _ in checks],
            lambda i: budget.to_micro(budget.spent_from_rollup(checks[i][3], checks[i][4])))
    except gate.BudgetRefused as refused:
        limit = checks[refused.index][3]
        budget.fail_tasks(limit, f"budget limit {limit.name!r} ({budget.scope_label(limit)}) was reached")
        _refuse(turn, conversation, agent, "BUDGET_EXCEEDED",
                f"{agent.name} did not call the model: {budget.BudgetBlocked(limit, budget.from_micro(refused.used_micro), budget.from_micro(reservation.amount_micro))}",
                {"limit_id": str(limit.id)})
        return None
    except gate.GateUnavailable as exc:
        _refuse(turn, conversation, agent, "BUDGET_EXCEEDED",
                f"{agent.name} did not call the model: the budget store is unreachable ({exc}) and a "
                "block limit covers this agent, so the call is refused.", {})
        return None
    if call_id is None:
        _hold_turn(turn, agent, transcript, "emergency pause")
        return None
    # End the read transaction so the pooled connection serves others while the call waits (a
    # worker pool runs MCC_MAX_CONCURRENT_CALLS turns on a few connections).
    commit_keeping_loaded()
    token = CancelToken()
    try:
        with cancellation.CallWatch(call_id, turn.id, token):
            result = gateway.chat(agent.model, transcript, agent.temperature, agent.max_tokens,
                                  tool_specs or None, cancel=token)
    except LLMCancelled as stopped:
        entry = _settle_call(turn, conversation, agent, call_index, stopped.partial, reservation)
        _cancelled(turn, conversation, agent, stopped.reason, entry, transcript)
        return None
    except Exception:
        gate.settle_budget(reservation.keys, reservation.amount_micro, [], 0, None)
        raise
    finally:
        gate.release_llm_call(call_id)
    return result, reservation


def _run_tools(turn: Turn, conversation: Conversation, agent: Agent, project: Project, result: LLMResult,
               transcript: list, tool_log: list, steps_done: int) -> list | None:
    """Run the tool calls of an answer (unless they repeat in a loop: the breaker cancels the turn
    and this returns None); the transcript with their results, committed with the turn."""
    loop = breakers.repeated_call(tool_log, result.tool_calls)
    if loop is not None:
        why, event = breakers.loop_tripped(turn, agent, conversation, loop)
        _cancelled(turn, conversation, agent, cancellation.reason_of(cancellation.STOP, why), None, transcript)
        publish("breaker_tripped", event)
        return None
    transcript = transcript + [result.assistant_message]
    for call in result.tool_calls:
        outcome = tools.run_tool_call(call, turn, agent, conversation, project)
        tool_log.append({"call": call, "result": outcome})
        transcript.append({"role": "tool", "tool_call_id": call.get("id"), "content": json.dumps(outcome)})
    tool_log.append({"step_end": steps_done + 1})
    turn.transcript, turn.tool_log = transcript, tool_log
    db.session.commit()
    outbox.flush()  # what the tools changed (task_progress, hand-offs) is announced now
    return transcript


def _succeed(turn: Turn, conversation: Conversation, agent: Agent, last: LLMResult, call_index: int,
             reservation, steps_done: int) -> None:
    """The last call's ledger row, the reply, the turn's end and its hand-offs in one transaction:
    the reply never exists without the row of the call that wrote it. Should storing the reply
    fail, the row is committed alone before the error goes on (and fails the turn)."""
    entry = _add_ledger_row(turn, conversation, agent, call_index, last, replies=1)
    try:
        reply, notices = _store_reply(turn, conversation, agent, last, entry, steps_done)
        commit_keeping_loaded()  # what is announced next is what was stored, without a reload
    except Exception:
        db.session.rollback()
        outbox.discard()
        entry = _add_ledger_row(turn, conversation, agent, call_index, last)
        db.session.commit()
        _count_spend(conversation, entry, reservation)
        raise
    outbox.flush()
    publish_message(reply)  # before counting the spend: a failure there must not hide a stored reply
    for notice in notices:
        publish_message(notice)
    log.info("turn %s of %s answered (%s in / %s out tokens, $%s%s)", turn.id, agent.name, reply.tokens_in,
             reply.tokens_out, reply.cost_usd, ", simulated" if last.simulated else "")
    _count_spend(conversation, entry, reservation)


def _turn_totals(turn: Turn, last: LedgerEntry) -> tuple[int, int, Decimal, bool]:
    """Tokens in and out, cost and whether every price was known, over all the turn's calls."""
    if turn.attempts == 1 and last.call_index == 0:  # its only call
        return last.tokens_in, last.tokens_out, last.cost_usd, last.price_known
    totals = db.session.execute(
        select(func.coalesce(func.sum(LedgerEntry.tokens_in), 0), func.coalesce(func.sum(LedgerEntry.tokens_out), 0),
               func.coalesce(func.sum(LedgerEntry.cost_usd), 0), func.min(LedgerEntry.price_known.cast(db.Integer)))
        .where(LedgerEntry.turn_id == turn.id)).one()
    return int(totals[0]), int(totals[1]), Decimal(totals[2]), bool(totals[3] if totals[3] is not None else 1)


def _store_reply(turn: Turn, conversation: Conversation, agent: Agent, last: LLMResult, entry: LedgerEntry,
                 steps_done: int) -> tuple[Message, list[Message]]:
    """The agent's reply, the turn succeeded, its hand-offs queued; flushed, not committed."""
    if last.tool_calls:  # the step limit ended the turn
        _system_message(conversation.id, f"{agent.name} stopped after {steps_done} tool steps "
                        "(MCC_MAX_TOOL_STEPS); its last tool calls were not run.",
                        {"reason": "tool_step_limit", "turn_id": str(turn.id)})
    tokens_in, tokens_out, cost, price_known = _turn_totals(turn, entry)
    reply = Message(conversation_id=conversation.id, author_type="agent", agent_id=agent.id,
                    content=last.content or "(no text in the answer)", tokens_in=tokens_in, tokens_out=tokens_out,
                    cost_usd=cost, reply_to_id=turn.reply_to_message_id,
                    meta={"turn_id": str(turn.id), "model": last.model, "simulated": last.simulated,
                          "price_known": price_known, "cost_source": last.cost_source,
                          # what the console shows of the turn's tool calls
                          **({"tool_calls": tools.calls_of(turn.tool_log, tools.SHOWN_CHARS)} if turn.tool_log
                             else {})})
    db.session.add(reply)
    db.session.flush()  # before the turn points at it
    turn.status, turn.reply_message_id, turn.finished_at, turn.error = "succeeded", reply.id, utcnow(), None
    agent.status = "idle"
    if "@" in reply.content:  # hand-offs go to the conversation's agents and status as they are now
        db.session.expire(conversation, ["agents", "status"])
    handoffs = mentioned_agents(reply.content, conversation.agents, exclude=agent)
    new_turns, notices = _add_turns(conversation, handoffs, turn.chain_id, turn.depth + 1, reply, turn.task_id)
    if new_turns and _held_reason(conversation):
        for new_turn in new_turns:
            new_turn.status = "held"  # the paused conversation keeps them for resume
    _end_stage(turn, agent)
    return reply, notices


def _refuse(turn: Turn, conversation: Conversation, agent: Agent, code: str, reason: str, details: dict) -> None:
    """The call was not made (budget): the turn ends, and people are told why."""
    turn.status, turn.error, turn.finished_at = "failed", reason, utcnow()
    agent.status = "idle"
    notice = _system_message(conversation.id, reason, {"reason": code.lower(), "turn_id": str(turn.id), **details})
    _end_stage(turn, agent, failure=reason)
    db.session.commit()
    outbox.flush()
    log.warning("turn %s refused: %s", turn.id, reason)
    publish_message(notice)
    publish("error", {"code": code, "message": reason,
                      "details": {"turn_id": str(turn.id), "agent_id": str(agent.id),
                                  "conversation_id": str(conversation.id), **details}},
            conversation_room(conversation.id))


def _cancelled(turn: Turn, conversation: Conversation, agent: Agent, reason: str,
               entry: LedgerEntry | None, transcript: list | None = None) -> None:
    """Told to stop (see ``cancellation``): the turn ends ``cancelled``, on record, with a system
    message. A pause keeps the work: a copy of the turn waits in its place and answers on resume."""
    kind, why = cancellation.parse(reason)
    turn.status, turn.error, turn.finished_at = "cancelled", why, utcnow()
    agent.status = "idle"
    said = f"{agent.name} was stopped: {why}."
    if entry is not None:
        estimate = " (estimated)" if entry.cost_source == "estimated" else ""
        said += (f" The call was closed mid-answer; what it streamed until then is on record "
                 f"({entry.tokens_out} tokens out, ${entry.cost_usd}{estimate}).")
    again = None
    if kind == cancellation.PAUSE:
        db.session.refresh(conversation)
        again = Turn(conversation_id=turn.conversation_id, agent_id=turn.agent_id, chain_id=turn.chain_id,
                     depth=turn.depth, reply_to_message_id=turn.reply_to_message_id, task_id=turn.task_id,
                     transcript=transcript or turn.transcript, tool_log=turn.tool_log,
                     created_at=turn.created_at,  # keeps its place in the conversation's queue
                     status="held" if _held_reason(conversation) else "queued")
        db.session.add(again)
        said += " It answers again once the pause is lifted."
    notice = _system_message(conversation.id, said,
                             {"reason": "turn_cancelled", "cause": why, "turn_id": str(turn.id),
                              **({"ledger_id": str(entry.id)} if entry is not None else {})})
    if again is None:
        _end_stage(turn, agent, failure=f"{agent.name} was stopped: {why}")
    db.session.commit()
    cancellation.forget(turn.id)
    outbox.flush()
    log.warning("turn %s of %s cancelled: %s", turn.id, agent.name, why)
    publish_message(notice)


def _fail_own_attempt(turn: Turn, attempt: int, reason: str) -> None:
    """``fail_turn``, if the turn is still this worker's attempt and running.

    A worker the reaper took for dead (its heartbeat lapsed) may still be running: its turn has
    been queued again and claimed by another worker (``attempts`` moved on), or it ended on record
    before the error. Then this attempt gives no verdict. Compare-and-set, so no lock order and the
    same on SQLite; the UPDATE holds the row until ``fail_turn`` commits."""
    turn_id = turn.id
    owned = db.session.execute(
        update(Turn).where(Turn.id == turn_id, Turn.status == "running", Turn.attempts == attempt)
        .values(finished_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    if owned:
        fail_turn(turn, db.session.get(Conversation, turn.conversation_id), db.session.get(Agent, turn.agent_id),
                  reason)
        return
    db.session.rollback()
    if turn.attempts != attempt:
        log.warning("turn %s is attempt %s elsewhere now (%s); this worker's attempt %s ends without a verdict",
                    turn_id, turn.attempts, turn.status, attempt)
    else:
        log.warning("turn %s had already ended %s; the error after its end changes nothing", turn_id, turn.status)


def fail_turn(turn: Turn, conversation: Conversation, agent: Agent, reason: str) -> None:
    """The turn ends ``failed``: the agent marked ``error``, a system message, a notification, the
    pipeline told; committed and announced."""
    turn.status, turn.error, turn.finished_at = "failed", reason, utcnow()
    agent.status = "error"
    notice = _system_message(conversation.id, f"{agent.name} could not answer: {reason}",
                             {"reason": "turn_failed", "turn_id": str(turn.id)})
    notify("warning", "turn_failed", f"{agent.name} failed a turn", reason,
           {"turn_id": str(turn.id), "conversation_id": str(conversation.id), "agent_id": str(agent.id)},
           conversation.project_id)
    _end_stage(turn, agent, failure=f"{agent.name} could not answer: {reason}")
    db.session.commit()
    outbox.flush()
    log.warning("turn %s of %s failed: %s", turn.id, agent.name, reason)
    publish_message(notice)
    publish("error", {"code": "LLM_ERROR", "message": notice.content,
                      "details": {"turn_id": str(turn.id), "agent_id": str(agent.id),
                                  "conversation_id": str(conversation.id)}}, conversation_room(conversation.id))


# --- stop controls ------------------------------------------------------------------

def release_held(conversation_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Held turns become queued again (resume, resume-all); returns the conversations to kick."""
    query = select(Turn.conversation_id).join(Conversation, Conversation.id == Turn.conversation_id).where(
        Turn.status.in_(("held", "queued")), Conversation.status == "active")
    if conversation_id is not None:
        query = query.where(Turn.conversation_id == conversation_id)
    conversations = list(dict.fromkeys(db.session.scalars(query)))
    if conversations:
        db.session.execute(update(Turn).where(Turn.conversation_id.in_(conversations), Turn.status == "held")
                           .values(status="queued").execution_options(synchronize_session=False))
    return conversations


def cancel_waiting_turns(agent_id: uuid.UUID | None = None, conversation_id: uuid.UUID | None = None,
                         why: str = "its turn was cancelled", turn_id: uuid.UUID | None = None) -> int:
    """Drop queued and held turns of an agent (reset), a conversation (completed), or one turn.

    A cancelled pipeline turn would leave its task's stage open for ever: the task goes to a person.
    The caller commits, then flushes the outbox.
    """
    query = select(Turn).where(Turn.status.in_(("queued", "held")))
    if agent_id is not None:
        query = query.where(Turn.agent_id == agent_id)
    if conversation_id is not None:
        query = query.where(Turn.conversation_id == conversation_id)
    if turn_id is not None:
        query = query.where(Turn.id == turn_id)
    cancelled = db.session.scalars(query.with_for_update()).all()
    now = utcnow()
    for turn in cancelled:
        turn.status, turn.finished_at = "cancelled", now
    db.session.flush()
    for turn in cancelled:
        agent = db.session.get(Agent, turn.agent_id)
        if agent is not None:
            _end_stage(turn, agent, failure=why)
    return len(cancelled)


def cancel_turn(turn_id: uuid.UUID, reason: str) -> str:
    """Cancel one turn: a waiting one at once (the caller commits), a running one within a poll.

    Returns "cancelled" (it was queued or held), "cancelling" (it is running: its worker closes
    the call in flight, or stops before the next one, and ends it ``cancelled`` with a system
    message), or the status it had already ended with; "missing" when there is no such turn.
    """
    turn = db.session.get(Turn, turn_id)
    if turn is None:
        return "missing"
    if turn.status in ("queued", "held"):
        cancel_waiting_turns(why=reason, turn_id=turn.id)
        return "cancelled"
    if turn.status == "running":
        cancellation.stop_turns([turn.id], reason)
        return "cancelling"
    return turn.status
