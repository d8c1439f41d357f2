// Shared pieces: path routing, links, dialogs, error display, formatting, data loading.
import { ComponentChildren } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { errorText } from "./api";
import { live } from "./live";
import { Store, useStore } from "./store";

export const route = new Store<string>(location.pathname);
window.addEventListener("popstate", () => route.set(location.pathname));

export function navigate(path: string, replace = false) {
  if (path === location.pathname) return;
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route.set(path);
}

export function Link(props: { href: string; children: ComponentChildren; class?: string; testid?: string }) {
  return (
    <a href={props.href} class={props.class} data-testid={props.testid}
       onClick={(event) => {
         if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
         event.preventDefault();
         navigate(props.href);
       }}>{props.children}</a>
  );
}

export const usd = (value: number | null | undefined) =>
  value === null || value === undefined ? "—" : "$" + value.toFixed(value !== 0 && Math.abs(value) < 1 ? 4 : 2);

export const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : "");

/** An error shown to the person: every refusal of the API ends up in one of these. */
export function ErrorBox(props: { error: unknown; testid?: string }) {
  if (!props.error) return null;
  return <div class="error" role="alert" data-testid={props.testid || "error"}>{errorText(props.error)}</div>;
}

/** Load data, reload on `deps` and after every live (re)connect; `reload` to refresh by hand. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]) {
  const { epoch } = useStore(live);
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let current = true;
    load().then((value) => { if (current) { setData(value); setError(null); } },
                (err) => { if (current) setError(err); });
    return () => { current = false; };
  }, [...deps, epoch, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, setData, error, reload };
}

/** Run an action, keeping its refusal to show. */
export function useAction() {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const run = async (action: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try { await action(); return true; } catch (err) { setError(err); return false; } finally { setBusy(false); }
  };
  return { error, busy, run, setError };
}

export function Dialog(props: { title: string; children: ComponentChildren; onOk: () => void; onCancel: () => void;
                                okLabel?: string; okDisabled?: boolean; danger?: boolean }) {
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => { if (event.key === "Escape") props.onCancel(); };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [props.onCancel]);
  return (
    <div class="backdrop" role="dialog" aria-modal="true" aria-label={props.title}>
      <form class="dialog"
            onSubmit={(event) => { event.preventDefault(); if (!props.okDisabled) props.onOk(); }}>
        <h2>{props.title}</h2>
        {props.children}
        <div class="actions">
          <button type="button" data-testid="confirm-cancel" onClick={props.onCancel}>Cancel</button>
          <button type="submit" class={props.danger ? "danger" : "primary"} data-testid="confirm-ok"
                  disabled={props.okDisabled}>{props.okLabel || "OK"}</button>
        </div>
      </form>
    </div>
  );
}

export function Meter(props: { value: number; testid?: string; label?: string }) {
  const value = Math.max(0, Math.min(100, props.value));
  return <progress class="meter" max={100} value={value} data-testid={props.testid}
                   aria-label={props.label || `${value}%`} title={`${value}%`} />;
}
