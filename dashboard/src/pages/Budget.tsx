// `/budget`: gauges against the global limits, alerts, the spend timeline, spend by project and
// agent, and the limits (admins edit them).
import { useState } from "preact/hooks";
import { api, can } from "../api";
import { useLive } from "../live";
import { Dialog, ErrorBox, Meter, useAction, useLoad, usd } from "../ui";

function isoDate(date: Date) { return date.toISOString().slice(0, 10); }

function Gauge({ label, period, testid }: { label: string; period: any; testid: string }) {
  const pct = period.percentage === null ? null : Math.round(period.percentage * 100);
  return (
    <div class="gauge card" data-testid={testid}>
      <h3>{label}</h3>
      <div class="big">{usd(period.spent)}</div>
      <div class="muted">{period.limit === null ? "no global limit" : `of ${usd(period.limit)} (${pct}%)`}</div>
      {pct !== null && <Meter value={pct} label={`${pct}% of the limit`} />}
    </div>
  );
}

const RANGE_DAYS = { day: 30, week: 7 * 12, month: 365 };

function Timeline() {
  const [granularity, setGranularity] = useState<"day" | "week" | "month">("day");
  const start = new Date(Date.now() - RANGE_DAYS[granularity] * 86400000);
  const timeline = useLoad(() => api("GET", `/budget/timeline?granularity=${granularity}&start_date=${isoDate(start)}`),
                           [granularity]);
  const points: any[] = timeline.data?.points || [];
  const max = Math.max(0.0001, ...points.map((p) => p.spent));
  const width = 760, height = 180, gap = 2;
  const bar = points.length ? width / points.length : width;
  return (
    <section class="card" data-testid="budget-timeline">
      <h2>Spend over time
        {(["day", "week", "month"] as const).map((g) => (
          <button class={g === granularity ? "primary" : ""} data-testid={`timeline-${g}`} onClick={() => setGranularity(g)}>{g}</button>
        ))}
      </h2>
      <ErrorBox error={timeline.error} />
      <svg viewBox={`0 0 ${width} ${height + 20}`} class="chart" role="img" aria-label="spend per period">
        {points.map((p, i) => {
          const h = (p.spent / max) * height;
          return (
            <g key={p.period_start}>
              <rect x={i * bar + gap / 2} y={height - h} width={Math.max(1, bar - gap)} height={h} class="bar">
                <title>{`${p.period_start}: ${usd(p.spent)} (${p.calls} calls)`}</title>
              </rect>
              {(i === 0 || i === points.length - 1) && (
                <text x={i === 0 ? 0 : width} y={height + 14} text-anchor={i === 0 ? "start" : "end"} class="axis">{p.period_start}</text>
              )}
            </g>
          );
        })}
        <text x={0} y={12} class="axis">max {usd(max)}</text>
      </svg>
    </section>
  );
}

function SpendTable({ title, path, testid, withType }: { title: string; path: string; testid: string; withType?: boolean }) {
  const spend = useLoad(() => api("GET", path), [path]);
  return (
    <section class="card" data-testid={testid}>
      <h2>{title} <span class="muted">this month</span></h2>
      <ErrorBox error={spend.error} />
      <table>
        <thead><tr><th>name</th>{withType && <th>type</th>}<th class="num">spent</th><th class="num">calls</th>
          <th class="num">tokens in/out</th><th class="num">messages</th></tr></thead>
        <tbody>
          {spend.data?.items.map((row: any) => (
            <tr key={row.id}><td>{row.name}</td>{withType && <td>{row.type}</td>}<td class="num">{usd(row.spent)}</td>
              <td class="num">{row.calls}</td><td class="num">{row.tokens_in}/{row.tokens_out}</td><td class="num">{row.messages}</td></tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

const EMPTY = { name: "", scope_type: "global", scope_id: "", amount_usd: "", period: "daily", alert_threshold: "0.8",
                action_on_exceed: "warn" };

function Limits() {
  const limits = useLoad(() => api("GET", "/budget/limits?limit=100"), []);
  const [editing, setEditing] = useState<any>(null);
  const action = useAction();
  const save = () => action.run(async () => {
    const body: any = { name: editing.name, scope_type: editing.scope_type, scope_id: editing.scope_id || null,
                        amount_usd: Number(editing.amount_usd), period: editing.period,
                        alert_threshold: Number(editing.alert_threshold), action_on_exceed: editing.action_on_exceed };
    if (editing.id) await api("PATCH", `/budget/limits/${editing.id}`, body);
    else await api("POST", "/budget/limits", body);
    setEditing(null);
    limits.reload();
  });
  const remove = (limit: any) => {
    if (window.confirm(`Delete the limit '${limit.name}'?`)) {
      action.run(() => api("DELETE", `/budget/limits/${limit.id}`)).then(limits.reload);
    }
  };
  const field = (key: string, extra: any = {}) => (
    <input data-testid={`limit-${key}`} value={editing[key] ?? ""} {...extra}
           onInput={(e) => setEditing({ ...editing, [key]: (e.target as HTMLInputElement).value })} />
  );
  const choice = (key: string, options: string[]) => (
    <select data-testid={`limit-${key}`} value={editing[key]}
            onChange={(e) => setEditing({ ...editing, [key]: (e.target as HTMLSelectElement).value })}>
      {options.map((o) => <option value={o}>{o}</option>)}
    </select>
  );
  return (
    <section class="card">
      <h2>Limits {can("admin") && <button data-testid="limit-new" onClick={() => setEditing({ ...EMPTY })}>New limit</button>}</h2>
      <ErrorBox error={limits.error || (!editing && action.error)} />
      <table>
        <thead><tr><th>name</th><th>scope</th><th>period</th><th class="num">amount</th><th class="num">alert at</th><th>on exceed</th>
          {can("admin") && <th />}</tr></thead>
        <tbody>
          {limits.data?.items.map((limit: any) => (
            <tr key={limit.id} data-testid={`limit-${limit.id}`}>
              <td>{limit.name}</td><td>{limit.scope_type}{limit.scope_id ? ` ${limit.scope_id.slice(0, 8)}` : ""}</td>
              <td>{limit.period}</td><td class="num">{usd(limit.amount_usd)}</td>
              <td class="num">{Math.round(limit.alert_threshold * 100)}%</td><td>{limit.action_on_exceed}</td>
              {can("admin") && (
                <td class="row-actions">
                  <button data-testid={`limit-edit-${limit.id}`} onClick={() => setEditing({ ...limit, scope_id: limit.scope_id || "" })}>Edit</button>
                  <button data-testid={`limit-delete-${limit.id}`} onClick={() => remove(limit)}>Delete</button>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {editing && (
        <Dialog title={editing.id ? `Edit ${editing.name}` : "New limit"} okLabel="Save" onOk={save}
                onCancel={() => { setEditing(null); action.setError(null); }}>
          <label>Name {field("name", { required: true, maxLength: 200 })}</label>
          <label>Scope {choice("scope_type", ["global", "project", "agent"])}</label>
          {editing.scope_type !== "global" && <label>Scope id (project or agent id) {field("scope_id")}</label>}
          <label>Amount (USD) {field("amount_usd", { type: "number", step: "0.01", min: 0, required: true })}</label>
          <label>Period {choice("period", ["daily", "weekly", "monthly"])}</label>
          <label>Alert threshold (0–1) {field("alert_threshold", { type: "number", step: "0.05", min: 0, max: 1 })}</label>
          <label>On exceed {choice("action_on_exceed", ["warn", "pause", "block"])}</label>
          <ErrorBox error={action.error} testid="limit-error" />
        </Dialog>
      )}
    </section>
  );
}

export function Budget() {
  const summary = useLoad(() => api("GET", "/budget/summary"), []);
  useLive("budget_alert", () => summary.reload());
  const s = summary.data;
  return (
    <main>
      <h1>Budget</h1>
      <ErrorBox error={summary.error} />
      {s && (
        <div class="gauges">
          <Gauge label="Today" period={s.today} testid="budget-today" />
          <Gauge label="This week" period={s.week} testid="budget-week" />
          <Gauge label="This month" period={s.month} testid="budget-month" />
        </div>
      )}
      {s && s.alerts.length > 0 && (
        <section class="card"><h2>Alerts</h2>
          <ul class="list">{s.alerts.map((a: any) => <li class={"alert " + a.type} data-testid="budget-alert">{a.type}: {a.message}</li>)}</ul>
        </section>
      )}
      <Timeline />
      <div class="columns">
        <SpendTable title="By project" path="/budget/by-project?limit=100" testid="budget-by-project" />
        <SpendTable title="By agent" path="/budget/by-agent?limit=100" testid="budget-by-agent" withType />
      </div>
      <Limits />
    </main>
  );
}
