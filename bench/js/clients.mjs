// socket.io-client 4.x load generator for bench/live_channel.py (one scenario per run).
// Reads its job as JSON from argv[2]; progress on stderr; prints one JSON result on stdout.
//
//   fanout:    N clients connect at once, join, then `rounds` messages are POSTed one at a time;
//              per-client delivery latency = receipt - time just before the POST.
//   storm:     N clients start connecting within `spread_ms`; each gets connect, connect_error or
//              nothing within `answer_s`; the connected join and must receive the next message;
//              /healthz and a REST GET are probed throughout.
//   anonymous: N bare Engine.IO websockets from one address that never authenticate; probes as above.
//
// Clients come from distinct loopback addresses (127.1.x.y, one client per address) unless the
// scenario says otherwise: a team's browsers are on many addresses, and MCC caps sockets per address.
import { io } from "socket.io-client";
import WebSocket from "ws";

const job = JSON.parse(process.argv[2]);
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.error(`[js ${new Date().toISOString().slice(11, 19)}]`, ...args);

function addressOf(i) {
  return `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

function pct(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil((p / 100) * sorted.length)) - 1];
}

function summary(ms) {
  const r = (x) => (x === null ? null : Math.round(x * 10) / 10);
  return { n: ms.length, p50: r(pct(ms, 50)), p90: r(pct(ms, 90)), p99: r(pct(ms, 99)), max: r(pct(ms, 100)) };
}

// One client: resolves with {socket, outcome, ms} once it has an answer (connect or connect_error) or times out.
function connectOne(i, { base, token, joinEvent, joinData, answerS, onMessage, localAddress }) {
  const started = now();
  return new Promise((resolve) => {
    const socket = io(base, {
      transports: ["websocket"], reconnection: false, forceNew: true, timeout: answerS * 1000,
      auth: token ? { token } : undefined, localAddress: localAddress ?? addressOf(i),
    });
    let settled = false;
    const settle = (outcome, extra = {}) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ socket, outcome, ms: now() - started, ...extra });
    };
    const timer = setTimeout(() => settle("no answer"), answerS * 1000);
    socket.on("message", (data) => onMessage && onMessage(i, data));
    socket.on("connect_error", (err) => settle("connect_error", { code: err?.data?.code ?? err?.message }));
    socket.on("disconnect", (reason) => settle("disconnected before an answer", { code: reason }));
    socket.on("connect", async () => {
      try {
        let ack;
        for (let attempt = 1; attempt <= 5; attempt++) {  // SERVICE_UNAVAILABLE: back off and retry
          ack = await socket.timeout(answerS * 1000).emitWithAck(joinEvent, joinData);
          if (ack?.ok || ack?.error?.code !== "SERVICE_UNAVAILABLE") break;
          await sleep(1000 + Math.random() * 2000);
        }
        settle(ack && ack.ok ? "joined" : "join refused", ack && ack.ok ? {} : { code: ack?.error?.code });
      } catch (err) {
        settle("join: no ack");
      }
    });
  });
}

// As a client should: on SERVICE_UNAVAILABLE back off 1-3 s (jittered) and connect again.
async function connectRetrying(i, opts, tries) {
  const started = now();
  for (let attempt = 1; ; attempt++) {
    const r = await connectOne(i, opts);
    if (r.outcome === "connect_error" && r.code === "SERVICE_UNAVAILABLE" && attempt < tries) {
      r.socket.close();
      await sleep(1000 + Math.random() * 2000);
      continue;
    }
    return { ...r, attempts: attempt, ms: now() - started };
  }
}

async function timed(url, init = {}) {
  const started = now();
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(10000) });
    await response.arrayBuffer();
    return { ms: now() - started, status: response.status };
  } catch (err) {
    return { ms: now() - started, status: String(err.name) };
  }
}

// /healthz and a REST GET, one of each every `everyMs`, until stop() is called.
function probe(base, token, everyMs = 100) {
  const results = { healthz: [], rest: [], failures: [] };
  let running = true;
  const loop = async (kind, url, init) => {
    while (running) {
      const r = await timed(url, init);
      results[kind].push(r.ms);
      if (r.status !== 200) results.failures.push(`${kind}: ${r.status}`);
      await sleep(everyMs);
    }
  };
  const loops = [loop("healthz", `${base}/healthz`)];
  if (token) loops.push(loop("rest", `${base}/api/v1/auth/me`, { headers: { Authorization: `Bearer ${token}` } }));
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return { healthz_ms: summary(results.healthz), rest_ms: summary(results.rest),
               failures: results.failures.slice(0, 10), failure_count: results.failures.length };
    },
  };
}

async function post(job, marker) {
  const response = await fetch(job.post_url, {
    method: "POST", body: JSON.stringify({ ...(job.post_template || {}), content: marker }),
    headers: { "Content-Type": "application/json", ...(job.post_token ? { Authorization: `Bearer ${job.post_token}` } : {}) },
    signal: AbortSignal.timeout(30000),
  });
  const body = await response.json();
  if (response.status !== 201 && response.status !== 200) throw new Error(`POST ${response.status} ${JSON.stringify(body)}`);
  return body;
}

function counts(outcomes) {
  const c = {};
  for (const o of outcomes) {
    const key = o.code ? `${o.outcome} ${o.code}` : o.outcome;
    c[key] = (c[key] || 0) + 1;
  }
  return c;
}

// Wait until every listed client has the marker (or the timeout); latencies from t0.
function deliveries(n) {
  let marker = null, t0 = 0, got = new Map(), done = null, duplicates = 0, expected = 0;
  return {
    onMessage(i, data) {
      if (!data || data.content !== marker) return;
      if (got.has(i)) { duplicates += 1; return; }
      got.set(i, now() - t0);
      if (got.size >= expected && done) done();
    },
    async round(m, count, send, timeoutMs) {
      marker = m; got = new Map(); expected = count;
      const finished = new Promise((resolve) => { done = resolve; });
      t0 = now();
      await send(m);
      const postMs = now() - t0;
      await Promise.race([finished, sleep(timeoutMs)]);
      done = null;
      return { latencies: [...got.values()], missing: count - got.size, postMs };
    },
    get duplicates() { return duplicates; },
  };
}

async function fanout(job) {
  const d = deliveries(job.clients);
  const opts = { base: job.base, token: job.token, joinEvent: job.join_event, joinData: job.join_data,
                 answerS: job.answer_s ?? 60, onMessage: (i, data) => d.onMessage(i, data) };
  const started = now();
  const results = await Promise.all(Array.from({ length: job.clients }, (_, i) => connectRetrying(i, opts, job.tries ?? 10)));
  const connectMs = now() - started;
  const joined = results.filter((r) => r.outcome === "joined");
  log(`${job.name}: ${joined.length}/${job.clients} joined in ${(connectMs / 1000).toFixed(1)} s`, counts(results));
  const rounds = [];
  const warm = await d.round(`warm-up ${Date.now()}`, joined.length, (m) => post(job, m), job.round_timeout_ms ?? 20000);
  log(`${job.name}: warm-up missing ${warm.missing}`);
  process.stdout.write(JSON.stringify({ event: "ready" }) + "\n");  // the orchestrator samples CPU from here
  for (let r = 0; r < job.rounds; r++) {
    rounds.push(await d.round(`round ${r} ${Date.now()}`, joined.length, (m) => post(job, m), job.round_timeout_ms ?? 20000));
    await sleep(job.pause_ms ?? 300);
  }
  process.stdout.write(JSON.stringify({ event: "rounds done" }) + "\n");
  const all = rounds.flatMap((r) => r.latencies);
  const result = {
    name: job.name, clients: job.clients, joined: joined.length, outcomes: counts(results),
    connect_all_s: Math.round(connectMs) / 1000, connect_ms: summary(results.map((r) => r.ms)),
    connect_attempts: summary(results.map((r) => r.attempts)),
    rounds: rounds.length, delivery_ms: summary(all),
    median_round_p99_ms: pct(rounds.map((r) => pct(r.latencies, 99) ?? Infinity), 50),
    per_round_p50_p99_ms: rounds.map((r) => [Math.round(pct(r.latencies, 50)), Math.round(pct(r.latencies, 99))]),
    post_ms: summary(rounds.map((r) => r.postMs)),
    missing_deliveries: rounds.reduce((a, r) => a + r.missing, 0) + (job.clients - joined.length) * rounds.length,
    duplicates: d.duplicates,
  };
  for (const r of results) r.socket.close();
  return result;
}

async function storm(job) {
  const d = deliveries(job.clients);
  const opts = { base: job.base, token: job.token, joinEvent: job.join_event, joinData: job.join_data,
                 answerS: job.answer_s ?? 30, onMessage: (i, data) => d.onMessage(i, data) };
  const probes = probe(job.base, job.token);
  const started = now();
  const results = await Promise.all(Array.from({ length: job.clients }, async (_, i) => {
    await sleep((i * job.spread_ms) / job.clients);
    return connectOne(i, opts);
  }));
  const answeredAllS = (now() - started) / 1000;
  const probeResult = await probes.stop();
  const joined = results.map((r, i) => [r, i]).filter(([r]) => r.outcome === "joined");
  log(`storm: ${joined.length}/${job.clients} joined; all answered within ${answeredAllS.toFixed(1)} s`, counts(results));
  // Those that connected receive the next event.
  const next = await d.round(`after the storm ${Date.now()}`, joined.length, (m) => post(job, m), 20000);
  for (const r of results) r.socket.close();
  return {
    name: "storm", clients: job.clients, spread_ms: job.spread_ms, outcomes: counts(results),
    every_client_answered: results.every((r) => r.outcome !== "no answer"),
    all_answered_s: Math.round(answeredAllS * 100) / 100, answer_ms: summary(results.map((r) => r.ms)),
    refused_answer_ms: summary(results.filter((r) => r.outcome === "connect_error").map((r) => r.ms)),
    next_event: { expected: joined.length, missing: next.missing, delivery_ms: summary(next.latencies) },
    during_storm: probeResult,
  };
}

async function anonymous(job) {
  const probes = probe(job.base, job.token);
  const url = job.base.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket";
  const started = now();
  const sockets = await Promise.all(Array.from({ length: job.clients }, () => new Promise((resolve) => {
    const ws = new WebSocket(url, { localAddress: "127.0.0.1" });
    const r = { ws, outcome: "no answer", closedByServerMs: null };
    const timer = setTimeout(() => resolve(r), 10000);
    ws.on("open", () => { r.outcome = "open"; clearTimeout(timer); resolve(r); });
    ws.on("unexpected-response", (_req, res) => { r.outcome = `refused ${res.statusCode}`; clearTimeout(timer); resolve(r); });
    ws.on("error", () => { if (r.outcome === "no answer") { r.outcome = "error"; clearTimeout(timer); resolve(r); } });
    ws.on("close", () => { r.closedByServerMs = now() - started; });
  })));
  const openedS = (now() - started) / 1000;
  await sleep(job.hold_ms ?? 8000);
  const probeResult = await probes.stop();
  const opened = sockets.filter((s) => s.outcome === "open");
  const closedByServer = opened.filter((s) => s.closedByServerMs !== null);
  for (const s of sockets) { try { s.ws.terminate(); } catch (err) { /* gone */ } }
  return {
    name: "anonymous", clients: job.clients, outcomes: counts(sockets), opened_within_s: Math.round(openedS * 100) / 100,
    opened: opened.length, closed_by_server: closedByServer.length,
    closed_by_server_after_ms: summary(closedByServer.map((s) => s.closedByServerMs)),
    during: probeResult,
  };
}

const scenarios = { fanout, storm, anonymous };
const result = await scenarios[job.scenario](job);
process.stdout.write(JSON.stringify({ event: "result", result }) + "\n");
process.exit(0);
