"""The agent runtime: the turn engine (``engine``), the call gate, locks and liveness (``gate``),
stopping work under way (``cancellation``), stop controls (``control``), what an agent sees
(``prompts``) and the tools it may call (``tools``). See docs/runtime.md."""
