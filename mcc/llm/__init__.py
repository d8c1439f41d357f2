"""The LLM gateway client, the price table and the simulated provider."""
