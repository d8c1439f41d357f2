"""Public list prices in USD per million tokens (input, output), and cost arithmetic.

Override or extend with MCC_LLM_PRICES (JSON text) or MCC_LLM_PRICES_FILE (path to JSON), both
shaped ``{"model/name": {"input": 3.0, "output": 15.0}}``. Prices as published by the providers
(and OpenRouter, which passes them through) in 2026; check them when a model is added.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

log = logging.getLogger(__name__)

PER_MILLION = Decimal(1_000_000)

DEFAULT_PRICES: dict[str, tuple[str, str]] = {
    "anthropic/claude-3.5-sonnet": ("3", "15"),
    "anthropic/claude-3.7-sonnet": ("3", "15"),
    "anthropic/claude-sonnet-4": ("3", "15"),
    "anthropic/claude-sonnet-4.5": ("3", "15"),
    "anthropic/claude-3.5-haiku": ("0.8", "4"),
    "anthropic/claude-haiku-4.5": ("1", "5"),
    "anthropic/claude-3-opus": ("15", "75"),
    "anthropic/claude-opus-4": ("15", "75"),
    "anthropic/claude-opus-4.1": ("15", "75"),
    "openai/gpt-4o": ("2.5", "10"),
    "openai/gpt-4o-mini": ("0.15", "0.6"),
    "openai/gpt-4.1": ("2", "8"),
    "openai/gpt-4.1-mini": ("0.4", "1.6"),
    "openai/gpt-4.1-nano": ("0.1", "0.4"),
    "openai/gpt-5": ("1.25", "10"),
    "openai/gpt-5-mini": ("0.25", "2"),
    "openai/o3": ("2", "8"),
    "openai/o3-mini": ("1.1", "4.4"),
    "openai/o4-mini": ("1.1", "4.4"),
    "google/gemini-2.5-pro": ("1.25", "10"),
    "google/gemini-2.5-flash": ("0.3", "2.5"),
    "google/gemini-2.0-flash-001": ("0.1", "0.4"),
    "deepseek/deepseek-chat": ("0.27", "1.1"),
    "deepseek/deepseek-r1": ("0.55", "2.19"),
    "meta-llama/llama-3.1-70b-instruct": ("0.12", "0.3"),
    "meta-llama/llama-3.3-70b-instruct": ("0.13", "0.4"),
    "mistralai/mistral-large": ("2", "6"),
    "qwen/qwen-2.5-coder-32b-instruct": ("0.07", "0.16"),
}


@dataclass(frozen=True)
class Price:
    input_per_million: Decimal
    output_per_million: Decimal


def load_prices(overrides_json: str | None = None, overrides_file: str | None = None) -> dict[str, Price]:
    table = {name: Price(Decimal(i), Decimal(o)) for name, (i, o) in DEFAULT_PRICES.items()}
    for source in (Path(overrides_file).read_text() if overrides_file else None, overrides_json):
        if not source:
            continue
        for name, price in json.loads(source).items():
            table[name] = Price(Decimal(str(price["input"])), Decimal(str(price["output"])))
    return table


def find_price(table: dict[str, Price], model: str) -> Price | None:
    """Exact name first, then the same model under any provider prefix (``gpt-4o`` for OpenAI)."""
    if model in table:
        return table[model]
    bare = model.split("/", 1)[-1]
    for name, price in table.items():
        if name.split("/", 1)[-1] == bare:
            return price
    return None


def cost_of(price: Price, tokens_in: int, tokens_out: int) -> Decimal:
    cost = (price.input_per_million * tokens_in + price.output_per_million * tokens_out) / PER_MILLION
    return cost.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
