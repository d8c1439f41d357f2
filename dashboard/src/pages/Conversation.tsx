// `/projects/<p>/conversations/<c>`: newest messages at the bottom, older ones paged in with the
// cursor API when scrolled to the top, new ones and typing indicators live, tool calls readable.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { api, can } from "../api";
import { emit, useLive, useRoom } from "../live";
import { ErrorBox, Link, useAction, useLoad, usd, when } from "../ui";

const PAGE = 50;

interface Message { id: string; author_type: string; agent: any; user: any; content: string; created_at: string;
                    cost_usd: number; tokens_in: number; tokens_out: number; metadata: any }

export function Conversation({ projectId, conversationId }: { projectId: string; conversationId: string }) {
  const base = `/projects/${projectId}/conversations/${conversationId}`;
  useRoom(conversationId);
  const conversation = useLoad(() => api("GET", `${base}?limit=${PAGE}`), [base]);
  const [messages, setMessages] = useState<Message[]>([]);  // oldest first
  const [hasMore, setHasMore] = useState(false);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [typing, setTyping] = useState<Record<string, string>>({});
  const [text, setText] = useState("");
  const action = useAction();
  const list = useRef<HTMLDivElement>(null);
  const stick = useRef(true);        // keep the view at the bottom while it is there
  const anchor = useRef<number | null>(null);  // scroll height before older messages were prepended
  const lastTyping = useRef(0);

  useEffect(() => {  // (re)loaded: the newest page, merged with what is already shown
    const data = conversation.data;
    if (!data) return;
    const newest: Message[] = [...data.messages].reverse();
    setMessages((shown) => merge(shown.length ? shown : [], newest));
    if (!messages.length) setHasMore(data.has_more);
  }, [conversation.data]);

  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (anchor.current !== null) {
      el.scrollTop = el.scrollHeight - anchor.current;
      anchor.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [messages, typing]);

  const agentName = (id: string) => conversation.data?.agents.find((a: any) => a.id === id)?.name || "An agent";
  useLive("message", (message: Message & { conversation_id: string }) => {
    if (message.conversation_id !== conversationId) return;
    setMessages((shown) => merge(shown, [message]));
  });
  useLive("agent_typing", (event) => {
    if (event.conversation_id !== conversationId) return;
    setTyping((now) => toggle(now, "agent:" + event.agent_id, event.is_typing ? agentName(event.agent_id) : null));
  });
  useLive("user_typing", (event) => {
    if (event.conversation_id !== conversationId) return;
    const key = "user:" + event.user.id;
    setTyping((now) => toggle(now, key, event.is_typing ? event.user.username : null));
    if (event.is_typing) window.setTimeout(() => setTyping((now) => toggle(now, key, null)), 6000);
  });
  useLive("conversation_status", (event) => {
    if (event.conversation_id === conversationId && conversation.data) {
      conversation.setData({ ...conversation.data, status: event.status });
    }
  });

  const loadOlder = async () => {
    if (loadingOlder || !hasMore || !messages.length) return;
    setLoadingOlder(true);
    try {
      const page = await api("GET", `${base}/messages?before=${messages[0].id}&limit=${PAGE}`);
      anchor.current = list.current ? list.current.scrollHeight - list.current.scrollTop : null;
      setMessages((shown) => merge([...page.items].reverse(), shown));
      setHasMore(page.has_more);
    } catch (err) {
      action.setError(err);
    } finally {
      setLoadingOlder(false);
    }
  };

  const onScroll = () => {
    const el = list.current!;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 200) loadOlder();
  };

  const send = () => action.run(async () => {
    const ack = await emit("send_message", { conversation_id: conversationId, content: text });
    if (!ack.ok) {
      // Not connected: REST does the same thing.
      if (ack.error.code === "OFFLINE" || ack.error.code === "TIMEOUT") {
        const message = await api("POST", `${base}/messages`, { content: text });
        setMessages((shown) => merge(shown, [message]));
      } else {
        throw Object.assign(new Error(ack.error.message), ack.error);
      }
    } else {
      setMessages((shown) => merge(shown, [ack.message]));
    }
    setText("");
    stick.current = true;
  });

  const onInput = (value: string) => {
    setText(value);
    const now = Date.now();
    if (now - lastTyping.current > 2000) {
      lastTyping.current = now;
      emit("typing", { conversation_id: conversationId, is_typing: true });
    }
  };

  const status = conversation.data?.status;
  const setStatus = (verb: "pause" | "resume") =>
    action.run(async () => conversation.setData({ ...conversation.data, ...(await api("POST", `${base}/${verb}`)) }));
  const typingNames = Object.values(typing);

  return (
    <main class="conversation">
      <ErrorBox error={conversation.error} />
      <header>
        <Link href={`/projects/${projectId}`}>← project</Link>
        <h1>{conversation.data?.title}</h1>
        <span data-testid="conversation-status" class={"state " + (status || "")}>{status}</span>
        <span class="muted">{conversation.data?.agents.map((a: any) => `${a.name} (${a.type})`).join(", ")}</span>
        {can("operator") && status === "active" && (
          <button data-testid="conversation-pause" onClick={() => setStatus("pause")}>Pause</button>
        )}
        {can("operator") && status === "paused" && (
          <button data-testid="conversation-resume" onClick={() => setStatus("resume")}>Resume</button>
        )}
      </header>
      <div class="messages" data-testid="message-list" ref={list} onScroll={onScroll}>
        {hasMore && <div class="muted center">{loadingOlder ? "Loading older messages…" : "Scroll up for older messages"}</div>}
        {messages.map((m) => <MessageView key={m.id} message={m} />)}
      </div>
      <div class="typing" data-testid="typing-indicator">
        {typingNames.length ? `${typingNames.join(", ")} ${typingNames.length > 1 ? "are" : "is"} typing…` : ""}
      </div>
      <ErrorBox error={action.error} testid="message-error" />
      {can("operator") && (
        <form class="send" onSubmit={(e) => { e.preventDefault(); if (text.trim()) send(); }}>
          <textarea data-testid="message-input" rows={2} value={text} maxLength={100000}
                    placeholder="Message the agents (@name to call one)"
                    onInput={(e) => onInput((e.target as HTMLTextAreaElement).value)}
                    onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); if (text.trim()) send(); } }} />
          <button class="primary" type="submit" data-testid="message-send" disabled={action.busy || !text.trim()}>Send</button>
        </form>
      )}
    </main>
  );
}

function MessageView({ message }: { message: Message }) {
  const author = message.author_type === "agent" ? `${message.agent?.name} (${message.agent?.type})`
    : message.author_type === "user" ? message.user?.username : "system";
  const tools: any[] = message.metadata?.tool_calls || [];
  return (
    <article class={"message " + message.author_type} data-testid={`message-${message.id}`}>
      <div class="meta">
        <strong>{author}</strong> <span class="muted">{when(message.created_at)}</span>
        {message.author_type === "agent" && (
          <span class="muted"> · {message.tokens_in}/{message.tokens_out} tok · {usd(message.cost_usd)}
            {message.metadata?.model ? ` · ${message.metadata.model}` : ""}{message.metadata?.simulated ? " · simulated" : ""}</span>
        )}
      </div>
      <div class="content">{message.content}</div>
      {tools.length > 0 && (
        <details class="tools" data-testid={`message-tools-${message.id}`}>
          <summary>{tools.length} tool call{tools.length > 1 ? "s" : ""}: {tools.map((t) => t.name).join(", ")}</summary>
          {tools.map((t) => (
            <div class="tool">
              <div><strong>{t.name}</strong></div>
              <pre>{t.arguments}</pre>
              {t.result !== undefined && <pre class="result">→ {t.result}</pre>}
            </div>
          ))}
        </details>
      )}
    </article>
  );
}

/** The union of two message lists, oldest first, each message once. */
function merge(a: Message[], b: Message[]): Message[] {
  const byId = new Map<string, Message>();
  for (const m of a) byId.set(m.id, m);
  for (const m of b) byId.set(m.id, m);
  return [...byId.values()].sort((x, y) => (x.created_at < y.created_at ? -1 : x.created_at > y.created_at ? 1 : 0));
}

function toggle(map: Record<string, string>, key: string, value: string | null) {
  const next = { ...map };
  if (value) next[key] = value;
  else delete next[key];
  return next;
}
