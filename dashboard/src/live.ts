// The Socket.IO connection: authenticated with the in-memory access token, reconnecting by itself,
// re-joining its conversation rooms, and bumping `epoch` on every (re)connect so pages refetch
// what they may have missed while it was down.
import { io, Socket } from "socket.io-client";
import { useEffect, useRef } from "preact/hooks";
import { accessToken, refresh } from "./api";
import { Store } from "./store";

export type LiveState = "connecting" | "connected" | "reconnecting" | "offline";
export const live = new Store<{ state: LiveState; epoch: number }>({ state: "offline", epoch: 0 });

let socket: Socket | null = null;
const rooms = new Map<string, number>();

export function connect() {
  if (socket) return;
  live.update({ state: "connecting" });
  socket = io({ autoConnect: false, auth: (cb) => cb({ token: accessToken() }),
                reconnectionDelay: 300, reconnectionDelayMax: 3000 });
  socket.on("connect", () => {
    rooms.forEach((_count, id) => socket!.emit("join_conversation", { conversation_id: id }));
    live.set({ state: "connected", epoch: live.get().epoch + 1 });
  });
  socket.on("disconnect", (reason) => {
    live.update({ state: "reconnecting" });
    // The server closed it (e.g. its token expired): refresh and come back ourselves.
    if (reason === "io server disconnect") refresh().finally(() => socket?.connect());
  });
  socket.on("connect_error", (error: any) => {
    live.update({ state: "reconnecting" });
    if (error?.data?.code === "UNAUTHORIZED") {
      refresh().then((ok) => { if (ok) window.setTimeout(() => socket?.connect(), 200); });
    }
  });
  socket.connect();
}

export function disconnect() {
  socket?.disconnect();
  socket = null;
  rooms.clear();
  live.set({ state: "offline", epoch: live.get().epoch });
}

/** Send a client event and resolve with its acknowledgement. */
export function emit(event: string, payload: object): Promise<any> {
  return new Promise((resolve) => {
    if (!socket || !socket.connected) return resolve({ ok: false, error: { code: "OFFLINE", message: "Not connected." } });
    socket.timeout(10000).emit(event, payload, (err: any, ack: any) =>
      resolve(err ? { ok: false, error: { code: "TIMEOUT", message: "No answer from the server." } } : ack));
  });
}

function join(id: string) {
  rooms.set(id, (rooms.get(id) || 0) + 1);
  if (rooms.get(id) === 1 && socket?.connected) socket.emit("join_conversation", { conversation_id: id });
}

function leave(id: string) {
  const left = (rooms.get(id) || 1) - 1;
  if (left > 0) { rooms.set(id, left); return; }
  rooms.delete(id);
  if (socket?.connected) socket.emit("leave_conversation", { conversation_id: id });
}

/** Subscribe a component to a server event for as long as it is mounted. */
export function useLive(event: string, handler: (payload: any) => void) {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    const listener = (payload: any) => ref.current(payload);
    socket?.on(event, listener);
    return () => { socket?.off(event, listener); };
  }, [event, socket]);
}

/** Be in a conversation's room while mounted (re-joined after every reconnect). */
export function useRoom(id: string) {
  useEffect(() => { join(id); return () => leave(id); }, [id]);
}
