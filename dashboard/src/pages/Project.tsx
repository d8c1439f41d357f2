// `/projects/<id>`: agents, conversations, GitHub issues, the live task board, pull requests.
import { useState } from "preact/hooks";
import { api, can } from "../api";
import { useLive } from "../live";
import { Dialog, ErrorBox, Link, Meter, navigate, useAction, useLoad, usd } from "../ui";
import { Agent, AgentRow, currentTasks, useSpendAfterTurns, withStats } from "./Overview";

const STATUSES = ["pending", "in_progress", "testing", "review", "completed", "failed"];
const AGENT_TYPES = ["architect", "coder", "tester", "reviewer", "orchestrator"];

export function Project({ projectId }: { projectId: string }) {
  const base = `/projects/${projectId}`;
  const project = useLoad(() => api("GET", base), [projectId]);
  return (
    <main>
      <ErrorBox error={project.error} />
      {project.data && (
        <h1>{project.data.name} <span class="muted">{project.data.github_repo}</span></h1>
      )}
      <Agents base={base} projectId={projectId} />
      <TaskBoard base={base} />
      <PullRequests base={base} />
      <div class="columns">
        <Conversations base={base} />
        <Issues base={base} />
      </div>
    </main>
  );
}

function Agents({ base, projectId }: { base: string; projectId: string }) {
  const agents = useLoad(() => api("GET", `${base}/agents?limit=100`), [base]);
  const tasks = useLoad(() => api("GET", `${base}/tasks?limit=100`), [base]);
  const [current, setCurrent] = useState<Record<string, any>>({});
  const [editing, setEditing] = useState<Agent | "new" | null>(null);
  const action = useAction();
  const [spendError, setSpendError] = useState<unknown>(null);
  const spendAfterTurn = useSpendAfterTurns(() => {
    api("GET", `${base}/agents?limit=100`).then((fresh) => {
      setSpendError(null);
      agents.setData((now: any) => now && { ...now, items: withStats(now.items, fresh.items) });
    }, setSpendError);
  });
  useLive("agent_status", (event) => {
    if (!agents.data?.items.some((a: Agent) => a.id === event.agent_id)) return;
    agents.setData((now: any) => now && { ...now, items: now.items.map((a: Agent) =>
      a.id === event.agent_id ? { ...a, status: event.status } : a) });
    setCurrent((now) => ({ ...now, [event.agent_id]: event.current_task }));
    spendAfterTurn(event, projectId);
  });
  const known = tasks.data ? currentTasks(tasks.data.items) : {};
  return (
    <section class="card">
      <h2>Agents {can("operator") && <button data-testid="agent-new" onClick={() => setEditing("new")}>New agent</button>}</h2>
      <ErrorBox error={agents.error || action.error || spendError} />
      <table>
        <thead><tr><th>agent</th><th>type</th><th>status</th><th>current task</th><th class="num">today</th>
          <th>model</th>{can("operator") && <th />}</tr></thead>
        <tbody>
          {agents.data?.items.map((agent: Agent) => (
            <>
              <AgentRow key={agent.id} agent={agent}
                        task={agent.id in current ? current[agent.id] : known[agent.id]} />
              <tr class="sub">
                <td colSpan={5} />
                <td>{agent.model_config.model} · t={agent.model_config.temperature} · {agent.model_config.max_tokens} tok</td>
                {can("operator") && (
                  <td class="row-actions">
                    <button data-testid={`agent-edit-${agent.id}`} onClick={() => setEditing(agent)}>Edit</button>
                    <button data-testid={`agent-reset-${agent.id}`} onClick={() => {
                      if (window.confirm(`Reset ${agent.name}'s memory?`)) {
                        action.run(() => api("POST", `${base}/agents/${agent.id}/reset`)).then(agents.reload);
                      }
                    }}>Reset</button>
                  </td>
                )}
              </tr>
            </>
          ))}
        </tbody>
      </table>
      {editing && <AgentForm base={base} agent={editing === "new" ? null : editing}
                             onDone={() => { setEditing(null); agents.reload(); }} />}
    </section>
  );
}

function AgentForm({ base, agent, onDone }: { base: string; agent: Agent | null; onDone: () => void }) {
  const [name, setName] = useState(agent?.name || "");
  const [type, setType] = useState(agent?.type || "coder");
  const [model, setModel] = useState(agent?.model_config.model || "openai/gpt-4o-mini");
  const [temperature, setTemperature] = useState(String(agent?.model_config.temperature ?? 0.2));
  const [maxTokens, setMaxTokens] = useState(String(agent?.model_config.max_tokens ?? 4096));
  const action = useAction();
  const save = () => action.run(async () => {
    const body: any = { name, model_config: { model, temperature: Number(temperature), max_tokens: Number(maxTokens) } };
    if (agent) await api("PATCH", `${base}/agents/${agent.id}`, body);
    else await api("POST", `${base}/agents`, { ...body, type });
  }).then((ok) => { if (ok) onDone(); });
  const input = (value: string, set: (v: string) => void, testid: string, extra: any = {}) => (
    <input data-testid={testid} value={value} onInput={(e) => set((e.target as HTMLInputElement).value)} {...extra} />
  );
  return (
    <Dialog title={agent ? `Edit ${agent.name}` : "New agent"} okLabel="Save" onOk={save} onCancel={onDone}
            okDisabled={action.busy}>
      <label>Name {input(name, setName, "agent-name", { required: true, maxLength: 100 })}</label>
      {!agent && (
        <label>Type
          <select data-testid="agent-type" value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)}>
            {AGENT_TYPES.map((t) => <option value={t}>{t}</option>)}
          </select>
        </label>
      )}
      <label>Model {input(model, setModel, "agent-model", { required: true })}</label>
      <label>Temperature {input(temperature, setTemperature, "agent-temperature", { type: "number", step: "0.1", min: 0, max: 2 })}</label>
      <label>Max tokens {input(maxTokens, setMaxTokens, "agent-max-tokens", { type: "number", min: 100, max: 128000 })}</label>
      <ErrorBox error={action.error} testid="agent-error" />
    </Dialog>
  );
}

function TaskBoard({ base }: { base: string }) {
  const tasks = useLoad(() => api("GET", `${base}/tasks?limit=100`), [base]);
  const [notes, setNotes] = useState<Record<string, string>>({});
  useLive("task_progress", (event) => {
    const items = tasks.data?.items || [];
    if (!items.some((t: any) => t.id === event.task_id)) { tasks.reload(); return; }  // a new task, maybe ours
    tasks.setData({ ...tasks.data, items: items.map((t: any) =>
      t.id === event.task_id ? { ...t, status: event.status, progress: event.progress } : t) });
    if (event.message) setNotes({ ...notes, [event.task_id]: event.message });
  });
  return (
    <section class="card">
      <h2>Tasks</h2>
      <ErrorBox error={tasks.error} />
      <div class="board">
        {STATUSES.map((status) => {
          const column = (tasks.data?.items || []).filter((t: any) => t.status === status);
          return (
            <div class="column" data-testid={`column-${status}`} key={status}>
              <h3>{status.replace("_", " ")} <span class="muted">{column.length}</span></h3>
              {column.map((task: any) => (
                <div class="task" data-testid={`task-${task.id}`} key={task.id}>
                  <div class="title">{task.title}</div>
                  <div class="muted">{task.priority}{task.assigned_to ? ` · ${task.assigned_to.name}` : ""}
                    {task.pr ? ` · PR #${task.pr.number}` : ""}</div>
                  <Meter value={task.progress} testid={`task-progress-${task.id}`} />
                  {notes[task.id] && <div class="note">{notes[task.id]}</div>}
                  {task.conversation_id && (
                    <Link href={`${base}/conversations/${task.conversation_id}`}>conversation</Link>
                  )}
                </div>
              ))}
            </div>
          );
        })}
      </div>
    </section>
  );
}

function PullRequests({ base }: { base: string }) {
  const prs = useLoad(() => api("GET", `${base}/pull-requests?state=all&limit=50`), [base]);
  const [rejecting, setRejecting] = useState<any>(null);
  const [feedback, setFeedback] = useState("");
  const action = useAction();
  const [refusal, setRefusal] = useState<Record<string, unknown>>({});
  useLive("task_progress", () => prs.reload());
  const act = async (pr: any, verb: "approve" | "reject", body?: object) => {
    setRefusal({ ...refusal, [pr.id]: null });
    try {
      await api("POST", `${base}/pull-requests/${pr.id}/${verb}`, body);
    } catch (err) {
      setRefusal({ ...refusal, [pr.id]: err });
    }
    prs.reload();
  };
  return (
    <section class="card">
      <h2>Pull requests</h2>
      <ErrorBox error={prs.error || action.error} />
      {prs.data?.items.length === 0 && <p class="muted">No pull requests.</p>}
      <table>
        <tbody>
          {prs.data?.items.map((pr: any) => (
            <tr data-testid={`pr-${pr.id}`} key={pr.id}>
              <td>#{pr.number}</td>
              <td>{pr.title}<div class="muted">{pr.head_ref} → {pr.base_ref}{pr.task ? ` · task: ${pr.task.title}` : ""}</div>
                <ErrorBox error={refusal[pr.id]} testid={`pr-error-${pr.id}`} /></td>
              <td><span class={"checks " + pr.checks_state} data-testid={`pr-checks-${pr.id}`}>checks: {pr.checks_state}</span></td>
              <td data-testid={`pr-state-${pr.id}`}>{pr.state} · {pr.review_state}</td>
              <td class="row-actions">
                {can("operator") && pr.state === "open" && (
                  <>
                    <button class="primary" data-testid={`pr-approve-${pr.id}`} onClick={() => act(pr, "approve")}>Approve</button>
                    <button data-testid={`pr-reject-${pr.id}`} onClick={() => { setFeedback(""); setRejecting(pr); }}>Reject</button>
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {rejecting && (
        <Dialog title={`Reject #${rejecting.number}`} okLabel="Request changes" danger okDisabled={!feedback.trim()}
                onCancel={() => setRejecting(null)}
                onOk={() => { const pr = rejecting; setRejecting(null); act(pr, "reject", { feedback }); }}>
          <label>Feedback for the coder (required)
            <textarea data-testid="pr-feedback" rows={4} value={feedback} autoFocus
                      onInput={(e) => setFeedback((e.target as HTMLTextAreaElement).value)} />
          </label>
        </Dialog>
      )}
    </section>
  );
}

function Conversations({ base }: { base: string }) {
  const conversations = useLoad(() => api("GET", `${base}/conversations?limit=50`), [base]);
  const agents = useLoad(() => api("GET", `${base}/agents?limit=100`), [base]);
  const [creating, setCreating] = useState(false);
  const [title, setTitle] = useState("");
  const [picked, setPicked] = useState<string[]>([]);
  const action = useAction();
  const create = () => action.run(async () => {
    const conversation = await api("POST", `${base}/conversations`, { title, agent_ids: picked });
    setCreating(false);
    navigate(`${base}/conversations/${conversation.id}`);
  });
  return (
    <section class="card">
      <h2>Conversations {can("operator") && <button data-testid="conversation-new" onClick={() => { setTitle(""); setPicked([]); setCreating(true); }}>New</button>}</h2>
      <ErrorBox error={conversations.error} />
      <ul class="list">
        {conversations.data?.items.map((c: any) => (
          <li key={c.id} data-testid={`conversation-${c.id}`}>
            <Link href={`${base}/conversations/${c.id}`}>{c.title}</Link>
            <span class="muted"> {c.type} · {c.status} · {c.agents.map((a: any) => a.name).join(", ")}</span>
          </li>
        ))}
      </ul>
      {creating && (
        <Dialog title="New conversation" okLabel="Create" okDisabled={!title.trim() || action.busy} onOk={create}
                onCancel={() => setCreating(false)}>
          <label>Title <input data-testid="conversation-title" value={title} maxLength={300} autoFocus
                              onInput={(e) => setTitle((e.target as HTMLInputElement).value)} /></label>
          <fieldset><legend>Agents</legend>
            {agents.data?.items.map((a: Agent) => (
              <label class="inline"><input type="checkbox" checked={picked.includes(a.id)}
                onChange={(e) => setPicked((e.target as HTMLInputElement).checked ? [...picked, a.id] : picked.filter((x) => x !== a.id))} />
                {a.name} ({a.type})</label>
            ))}
          </fieldset>
          <ErrorBox error={action.error} />
        </Dialog>
      )}
    </section>
  );
}

function Issues({ base }: { base: string }) {
  const issues = useLoad(() => api("GET", `${base}/issues?limit=50`), [base]);
  const action = useAction();
  const start = (issue: any) => action.run(async () => {
    const started = await api("POST", `${base}/issues/${issue.id}/start`);
    navigate(`${base}/conversations/${started.id}`);  // the 202 body is the new conversation
  });
  return (
    <section class="card">
      <h2>GitHub issues</h2>
      <ErrorBox error={issues.error || action.error} />
      {issues.data?.items.length === 0 && <p class="muted">No open issues.</p>}
      <ul class="list">
        {issues.data?.items.map((issue: any) => (
          <li key={issue.id} data-testid={`issue-${issue.id}`}>
            #{issue.number} {issue.title} <span class="muted">{issue.labels.join(", ")} · {issue.tasks_count} tasks</span>
            {can("operator") && (
              <button data-testid={`issue-start-${issue.id}`} onClick={() => start(issue)}>Start → architect</button>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

