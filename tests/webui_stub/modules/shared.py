"""modules/shared.py (+ shared_options.py, shared_state.py, shared_cmd_options.py): `opts`, `state`, `sd_model`.

`opts` holds the real defaults of the settings the processing code and the extension read, including the
built-in Hypertile extension's settings (registered by its `on_ui_settings`). `state` follows
`shared_state.State` (`sampling_step`/`sampling_steps` are set by the sampler, see sd_samplers.py).
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

from modules import options

OptionInfo = options.OptionInfo
options_section = options.options_section

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}
sd_upscalers: list = []
device = "cpu"

DEFAULTS: dict[str, Any] = {
    # shared_options.py
    "samples_save": True,
    "grid_only_if_multiple": True,
    "return_grid": True,
    "enable_pnginfo": True,
    "face_restoration": False,
    "sd_model_checkpoint": None,
    "CLIP_stop_at_last_layers": 1,
    "randn_source": "GPU",
    "tiling": False,
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "inpainting_mask_weight": 1.0,
    "initial_noise_multiplier": 1.0,
    "img2img_fix_steps": False,
    "cross_attention_optimization": "Automatic",
    "s_min_uncond": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "eta_noise_seed_delta": 0,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_img2img": 0.0,
    "token_merging_ratio_hr": 0.0,
    "pad_cond_uncond": False,
    "persistent_cond_cache": True,
    "batch_cond_uncond": True,
    "auto_backcompat": True,
    "use_old_hires_fix_width_height": False,
    "hires_fix_use_firstpass_conds": False,
    "add_model_name_to_info": True,
    "add_model_hash_to_info": True,
    "add_vae_name_to_info": True,
    "add_vae_hash_to_info": True,
    "add_user_name_to_info": False,
    "add_version_to_infotext": True,
    "infotext_skip_pasting": [],
    "infotext_styles": "Apply if any",
    # extensions-builtin/hypertile/scripts/hypertile_script.py (on_ui_settings)
    "hypertile_enable_unet": False,
    "hypertile_enable_unet_secondpass": False,
    "hypertile_max_depth_unet": 3,
    "hypertile_max_tile_unet": 256,
    "hypertile_swap_size_unet": 3,
    "hypertile_enable_vae": False,
}
INFOTEXT_NAMES = {
    "CLIP_stop_at_last_layers": "Clip skip",
    "randn_source": "RNG",
    "token_merging_ratio": "Token merging ratio",
    "token_merging_ratio_hr": "Token merging ratio hr",
    "hypertile_enable_unet": "Hypertile U-Net",
    "hypertile_enable_unet_secondpass": "Hypertile U-Net second pass",
}


def _default_labels() -> dict[str, OptionInfo]:
    return {k: OptionInfo(v, k, infotext=INFOTEXT_NAMES.get(k)) for k, v in DEFAULTS.items()}


class State:
    """shared_state.State: the job's progress and the interrupt/skip flags."""

    def __init__(self) -> None:
        self.server_start = time.time()
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent = None
        self.textinfo = None

    def skip(self) -> None:
        self.skipped = True

    def interrupt(self) -> None:
        self.interrupted = True

    def stop_generating(self) -> None:
        self.stopping_generation = True

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0

    def begin(self, job: str = "(unknown)") -> None:
        self.sampling_step = 0
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = job

    def end(self) -> None:
        self.job = ""
        self.job_count = 0


class TotalTQDM:
    def update(self) -> None:
        pass

    def updateTotal(self, new_total: int) -> None:  # noqa: N802 (real name)
        pass

    def clear(self) -> None:
        pass


def _cmd_opts() -> argparse.Namespace:
    return argparse.Namespace(
        api=False,
        nowebui=False,
        no_prompt_history=True,
        hide_ui_dir_config=False,
        freeze_settings=False,
        xformers=False,
        force_enable_xformers=False,
        opt_sdp_attention=False,
        use_cpu=["all"],
        lowvram=False,
        medvram=False,
        no_half=True,
    )


opts = options.Options(_default_labels())
state = State()
cmd_opts = _cmd_opts()
total_tqdm = TotalTQDM()
sd_model: Any = None
demo = None


def reset() -> None:
    """Fresh settings, state and no model, in place (`from modules.shared import opts` stays valid)."""
    global sd_model
    opts.__init__(_default_labels())
    state.__init__()
    cmd_opts.__dict__.update(vars(_cmd_opts()))
    sd_model = None
