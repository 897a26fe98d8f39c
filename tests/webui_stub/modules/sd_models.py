"""Stand-in for modules/sd_models.py: the checkpoints the webui knows by title, and `reload_model_weights`,
which makes one the loaded model and runs the `model_loaded` callbacks, as a real load does (A1111 1.10 runs
them after loading a new model and after loading weights into the same one; Forge Neo's `forge_model_reload`
after building the new model)."""

from __future__ import annotations

from typing import Any

from modules import script_callbacks, shared

checkpoints: dict[str, Any] = {}  # title -> model (tests register their models here)


def reload_model_weights(info: str) -> Any:
    sd_model = checkpoints[info]
    sd_model.sd_checkpoint_info = info
    shared.sd_model = sd_model
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model
