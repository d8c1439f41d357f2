// `/`: every project with today's cost and agent counts; every agent's live status and task.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api";
import { useLive } from "../live";
import { ErrorBox, Link, useLoad, usd } from "../ui";

export interface Agent { id: string; name: string; type: string; status: string; project_id: string;
                         is_active: boolean; model_config: { model: string; temperature: number; max_tokens: number };
                         stats: { messages_today: number; cost_today: number }; system_prompt: string | null }
export interface TaskRef { id: string; title: string }

const OPEN = ["pending", "in_progress", "testing", "review"];

/** Each agent's current task: the open task it holds (live events correct it as they come). */
export function currentTasks(tasks: any[]): Record<string, TaskRef> {
  const result: Record<string, TaskRef> = {};
  for (const task of tasks) {
    if (task.assigned_to && OPEN.includes(task.status) && !result[task.assigned_to.id]) {
      result[task.assigned_to.id] = { id: task.id, title: task.title };
    }
  }
  return result;
}

async function loadOverview() {
  const projects: any[] = (await api("GET", "/projects?limit=100")).items;
  const details = await Promise.all(projects.map(async (project: any) => {
    const [agents, tasks] = await Promise.all([
      api("GET", `/projects/${project.id}/agents?limit=100`),
      api("GET", `/projects/${project.id}/tasks?limit=100`),
    ]);
    return { project, agents: agents.items as Agent[], current: currentTasks(tasks.items) };
  }));
  return details;
}

/** Spend changes when a turn ends, and the API pushes no cost event: when an agent stops working
 *  (`agent_status` other than `working`, sent after the turn's ledger rows are committed), its
 *  spend is read again. The keys seen (projects) are read together at most every 1.5 s, the last
 *  event always followed by a read: a busy pipeline's hand-offs in several tabs must not run into
 *  the API's rate limit. Pending reads end with the page. */
export function useSpendAfterTurns(read: (keys: string[]) => void) {
  const pending = useRef(new Set<string>());
  const timer = useRef<number | undefined>(undefined);
  const latest = useRef(read);
  latest.current = read;
  useEffect(() => () => window.clearTimeout(timer.current), []);
  return (event: { status: string }, key: string) => {
    if (event.status === "working") return;
    pending.current.add(key);
    if (timer.current !== undefined) return;
    timer.current = window.setTimeout(() => {
      timer.current = undefined;
      const keys = [...pending.current];
      pending.current.clear();
      latest.current(keys);
    }, 1500);
  };
}

/** Each agent's spend (``stats``) from a fresh list, the rest as it is. */
export function withStats(agents: Agent[], fresh: Agent[]): Agent[] {
  const stats = new Map(fresh.map((a) => [a.id, a.stats]));
  return agents.map((a) => (stats.has(a.id) ? { ...a, stats: stats.get(a.id)! } : a));
}

export function AgentRow({ agent, task }: { agent: Agent; task?: TaskRef | null }) {
  return (
    <tr data-testid={`agent-${agent.id}`}>
      <td>{agent.name}</td>
      <td>{agent.type}</td>
      <td><span class={"status " + agent.status} data-testid={`agent-status-${agent.id}`}>{agent.status}</span></td>
      <td data-testid={`agent-task-${agent.id}`}>{task ? task.title : "—"}</td>
      <td class="num" data-testid={`agent-cost-${agent.id}`}>{usd(agent.stats.cost_today)}</td>
    </tr>
  );
}

export function Overview() {
  const { data, setData, error } = useLoad(loadOverview, []);
  const [spendError, setSpendError] = useState<unknown>(null);
  const spendAfterTurn = useSpendAfterTurns((projectIds) => {
    for (const projectId of projectIds) {
      Promise.all([api("GET", `/projects/${projectId}`), api("GET", `/projects/${projectId}/agents?limit=100`)])
        .then(([project, agents]) => {
          setSpendError(null);
          setData((now) => now && now.map((entry) => entry.project.id !== projectId ? entry : {
            ...entry, project: { ...entry.project, stats: project.stats }, agents: withStats(entry.agents, agents.items) }));
        }, setSpendError);
    }
  });
  useLive("agent_status", (event) => {
    setData((now) => now && now.map((entry) => {
      if (!entry.agents.some((a) => a.id === event.agent_id)) return entry;
      return { ...entry,
               agents: entry.agents.map((a) => (a.id === event.agent_id ? { ...a, status: event.status } : a)),
               current: { ...entry.current, [event.agent_id]: event.current_task } };
    }));
    const owner = data?.find((entry) => entry.agents.some((a) => a.id === event.agent_id));
    if (owner) spendAfterTurn(event, owner.project.id);
  });
  return (
    <main>
      <h1>Projects</h1>
      <ErrorBox error={error || spendError} />
      {data && data.length === 0 && <p class="muted">No projects yet (create one with POST /api/v1/projects).</p>}
      {data?.map(({ project, agents, current }) => {
        const working = agents.filter((a) => a.status === "working").length;
        return (
          <section class="card" data-testid={`project-${project.id}`} key={project.id}>
            <h2><Link href={`/projects/${project.id}`}>{project.name}</Link> <span class="muted">{project.github_repo}</span></h2>
            <p class="stats">
              <span data-testid={`project-cost-${project.id}`}>today {usd(project.stats.today_cost)}</span>
              <span>{agents.length} agents, {working} working</span>
              <span>{project.stats.open_issues} open issues</span>
              <span>{project.stats.active_conversations} active conversations</span>
            </p>
            {agents.length > 0 && (
              <table>
                <thead><tr><th>agent</th><th>type</th><th>status</th><th>current task</th><th class="num">today</th></tr></thead>
                <tbody>{agents.map((agent) => <AgentRow key={agent.id} agent={agent} task={current[agent.id]} />)}</tbody>
              </table>
            )}
          </section>
        );
      })}
    </main>
  );
}
