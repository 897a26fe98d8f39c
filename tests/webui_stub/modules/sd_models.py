"""modules/sd_models.py: the few calls processing makes; records what `apply_token_merging` was asked."""

from __future__ import annotations

from typing import Any

token_merging_calls: list[float] = []


def apply_token_merging(sd_model: Any, token_merging_ratio: float) -> None:
    token_merging_calls.append(token_merging_ratio)


def reload_model_weights(sd_model: Any = None, info: Any = None, forced_reload: bool = False) -> Any:
    return sd_model


def reset() -> None:
    token_merging_calls.clear()
