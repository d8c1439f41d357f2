// `/notifications`: newest first, read one or all.
import { api } from "../api";
import { useLive } from "../live";
import { unread } from "../TopBar";
import { ErrorBox, useAction, useLoad, when } from "../ui";

export function Notifications() {
  const list = useLoad(() => api("GET", "/notifications?limit=100"), []);
  const action = useAction();
  const after = () => { list.reload(); unread.refresh(); };
  useLive("budget_alert", () => list.reload());
  useLive("emergency_pause", () => list.reload());
  return (
    <main>
      <h1>Notifications
        <button data-testid="notifications-read-all" onClick={() => action.run(() => api("POST", "/notifications/read-all")).then(after)}>
          Mark all read</button>
      </h1>
      <ErrorBox error={list.error || action.error} />
      {list.data?.items.length === 0 && <p class="muted">Nothing yet.</p>}
      <ul class="notifications">
        {list.data?.items.map((n: any) => (
          <li key={n.id} data-testid={`notification-${n.id}`} class={`${n.severity} ${n.is_read ? "read" : "unread"}`}>
            <div><strong>{n.title}</strong> <span class="muted">{n.severity} · {n.kind} · {when(n.created_at)}</span></div>
            <div>{n.message}</div>
            {!n.is_read && (
              <button data-testid={`notification-read-${n.id}`}
                      onClick={() => action.run(() => api("POST", `/notifications/${n.id}/read`)).then(after)}>Mark read</button>
            )}
          </li>
        ))}
      </ul>
    </main>
  );
}
