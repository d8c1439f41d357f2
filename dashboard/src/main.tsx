import "./style.css";
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { onSecondFactor, resume, session } from "./api";
import { connect, disconnect } from "./live";
import { Budget } from "./pages/Budget";
import { Conversation } from "./pages/Conversation";
import { Login } from "./pages/Login";
import { Notifications } from "./pages/Notifications";
import { Overview } from "./pages/Overview";
import { Project } from "./pages/Project";
import { useStore } from "./store";
import { TopBar } from "./TopBar";
import { Dialog, navigate, route } from "./ui";

function Page({ path }: { path: string }) {
  let match;
  if (path === "/" || path === "") return <Overview />;
  if (path === "/budget") return <Budget />;
  if (path === "/notifications") return <Notifications />;
  if ((match = path.match(/^\/projects\/([^/]+)\/conversations\/([^/]+)\/?$/))) {
    return <Conversation key={match[2]} projectId={match[1]} conversationId={match[2]} />;
  }
  if ((match = path.match(/^\/projects\/([^/]+)\/?$/))) return <Project key={match[1]} projectId={match[1]} />;
  return <main><h1>Not found</h1><p>No page at {path}.</p></main>;
}

/** The step-up second factor: a dialog asking for a code, resolved by the person. */
function SecondFactor() {
  const [ask, setAsk] = useState<{ reason: string; resolve: (code: string | null) => void } | null>(null);
  const [code, setCode] = useState("");
  useEffect(() => onSecondFactor((reason) => new Promise((resolve) => { setCode(""); setAsk({ reason, resolve }); })), []);
  if (!ask) return null;
  const close = (value: string | null) => { ask.resolve(value); setAsk(null); };
  return (
    <Dialog title="Confirm with your second factor" okLabel="Confirm" okDisabled={!/^\d{6}$/.test(code)}
            onOk={() => close(code)} onCancel={() => close(null)}>
      <p>{ask.reason}</p>
      <input data-testid="stepup-code" inputMode="numeric" maxLength={6} value={code} autoFocus
             onInput={(e) => setCode((e.target as HTMLInputElement).value)} />
    </Dialog>
  );
}

function App() {
  const { user, ready } = useStore(session);
  const path = useStore(route);
  useEffect(() => { resume(); }, []);
  useEffect(() => {
    if (!ready) return;
    if (!user && path !== "/login") {
      sessionStorage.setItem("mcc.next", path);  // back there after logging in
      navigate("/login", true);
    }
    if (user && path === "/login") {
      navigate(sessionStorage.getItem("mcc.next") || "/", true);
      sessionStorage.removeItem("mcc.next");
    }
  }, [user, ready, path]);
  if (!ready) return <main class="muted">Loading…</main>;
  if (!user) { disconnect(); return <Login />; }
  connect();
  return (
    <>
      <TopBar key={user.id} />
      <Page path={path} />
      <SecondFactor />
    </>
  );
}

render(<App />, document.getElementById("app")!);
