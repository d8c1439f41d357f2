// A tiny observable value and a hook that re-renders a component when it changes.
import { useEffect, useState } from "preact/hooks";

export class Store<T> {
  private listeners = new Set<(value: T) => void>();
  constructor(private value: T) {}
  get(): T { return this.value; }
  set(value: T) { this.value = value; this.listeners.forEach((listener) => listener(value)); }
  update(patch: Partial<T>) { this.set({ ...this.value, ...patch }); }
  subscribe(listener: (value: T) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }
}

export function useStore<T>(store: Store<T>): T {
  const [value, setValue] = useState(store.get());
  useEffect(() => { setValue(store.get()); return store.subscribe(setValue); }, [store]);
  return value;
}
