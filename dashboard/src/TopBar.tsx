// On every page: system state with pause/resume, unread notifications, live-connection state.
import { useEffect, useState } from "preact/hooks";
import { api, can, logout, session } from "./api";
import { live, useLive } from "./live";
import { useStore } from "./store";
import { Dialog, ErrorBox, Link, useAction, useLoad, when } from "./ui";

interface Emergency { status: "running" | "paused"; actor?: string; triggered_by?: string; reason?: string;
                      timestamp?: string }

export const unread = { refresh: () => {} };

export function TopBar() {
  const { user } = useStore(session);
  const { state: liveState } = useStore(live);
  const status = useLoad(() => api<Emergency>("GET", "/emergency/status"), []);
  const notifications = useLoad(() => api("GET", "/notifications?is_read=false&limit=1"), []);
  const [dialog, setDialog] = useState<"pause" | "resume" | null>(null);
  const [reason, setReason] = useState("");
  const action = useAction();

  unread.refresh = notifications.reload;
  useEffect(() => {  // no event announces a notification: events that make one, and a slow poll
    const timer = window.setInterval(notifications.reload, 30000);
    return () => window.clearInterval(timer);
  }, []);
  useLive("emergency_pause", (event) => {
    status.setData({ status: "paused", triggered_by: event.triggered_by, reason: event.reason,
                     timestamp: event.timestamp });
    status.reload();  // who paused it: the REST state has the actor
    notifications.reload();
  });
  useLive("emergency_resume", (event) => {
    status.setData({ status: "running", actor: event.resumed_by, timestamp: event.timestamp });
    notifications.reload();
  });
  useLive("budget_alert", () => notifications.reload());
  useLive("task_progress", (event) => { if (event.status === "failed") notifications.reload(); });

  const state = status.data;
  const paused = state?.status === "paused";
  const confirm = async () => {
    const ok = await action.run(async () => {
      if (dialog === "pause") await api("POST", "/emergency/pause-all", { reason: reason.trim() || null });
      else await api("POST", "/emergency/resume-all");
    });
    setDialog(null);
    setReason("");
    if (ok) status.reload();
  };

  return (
    <header class="topbar">
      <nav>
        <Link href="/" class="brand">MCC</Link>
        <Link href="/">Overview</Link>
        <Link href="/budget">Budget</Link>
        <Link href="/notifications">Notifications
          <span class="badge" data-testid="notifications-count">{notifications.data ? notifications.data.unread : "…"}</span>
        </Link>
      </nav>
      <div class="system">
        <span data-testid="system-state" class={"state " + (state?.status || "")}
              title={paused ? `${state?.reason || ""}` : ""}>{state?.status || "…"}</span>
        {paused && (
          <span class="muted" data-testid="system-state-detail">
            by {state?.actor || state?.triggered_by} {when(state?.timestamp)}{state?.reason ? ` — ${state.reason}` : ""}
          </span>
        )}
        {!paused && can("operator") && (
          <button class="danger" data-testid="pause-all" onClick={() => setDialog("pause")}>Pause all</button>
        )}
        {paused && can("admin") && (
          <button class="primary" data-testid="resume-all" onClick={() => setDialog("resume")}>Resume all</button>
        )}
        <ErrorBox error={action.error || status.error} testid="system-error" />
      </div>
      <div class="who">
        <span data-testid="live-status" class={"live " + liveState}>{liveState}</span>
        <span>{user?.username} ({user?.role})</span>
        <button data-testid="logout" onClick={() => logout()}>Log out</button>
      </div>
      {dialog === "pause" && (
        <Dialog title="Pause every agent?" okLabel="Pause all" danger onOk={confirm} okDisabled={!reason.trim()}
                onCancel={() => setDialog(null)}>
          <p>No new LLM call starts anywhere until an admin resumes. Queued work is held, not dropped.</p>
          <label>Reason
            <input data-testid="pause-reason" maxLength={500} value={reason} autoFocus
                   onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
          </label>
        </Dialog>
      )}
      {dialog === "resume" && (
        <Dialog title="Resume every agent?" okLabel="Resume all" onOk={confirm} onCancel={() => setDialog(null)}>
          <p>Held work continues in order.</p>
        </Dialog>
      )}
    </header>
  );
}
