"""Stand-in for modules/shared.py (with shared_options.py and shared_state.py): `opts`, `state`, `sd_model`.

`opts` knows just the settings that the stand-in's processing code and the extension read; the
`hypertile_*` ones are registered in the real webui by the built-in Hypertile extension.
"""

from __future__ import annotations

from typing import Any

from modules import options

SETTINGS: dict[str, Any] = {
    "img2img_fix_steps": False,
    "hypertile_enable_unet": False,
    "hypertile_enable_unet_secondpass": False,
}


class State:
    """shared_state.State, the part read here: the step counters the sampler sets (no job bookkeeping or
    interrupts)."""

    def __init__(self) -> None:
        self.sampling_step = 0
        self.sampling_steps = 0


opts = options.Options(SETTINGS)
state = State()
sd_model: Any = None
