"""ToDo: Token Downsampling for Stable Diffusion UNets (arXiv 2402.13573), in pure torch.

import lib_todo
handle = lib_todo.apply(unet, lib_todo.TodoSettings(factor=2))
...
handle.remove()

Core: settings -> layout (where the model attends) -> plan (which call gets which factor) -> state (one pass,
live) -> downsample. Backends (`lib_todo.backends`) install it per model family; the webui layer
(`lib_todo.webui`) is imported only by the webui script.
"""

from .auto import auto_factors, dit_auto_factor, resolve_factors
from .backends import patch_forge_patcher
from .backends.forge_unet import patch_unet_patcher
from .backends.unet_hooks import has_hooks
from .downsample import downsample_kv
from .grid import downsampled_grid, grid_for_tokens, level_grid
from .joint_attention import joint_attention
from .layout import AttentionLayout, layout_of
from .patch import TodoHandle, apply, networks_of, patched, remove
from .plan import Target, TodoPlan
from .settings import AUTO, HIRES_MODES, METHODS, ParsedSettings, TodoSettings
from .state import PassState

__version__ = "0.2.0"

__all__ = [
    "AUTO",
    "HIRES_MODES",
    "METHODS",
    "AttentionLayout",
    "ParsedSettings",
    "PassState",
    "Target",
    "TodoHandle",
    "TodoPlan",
    "TodoSettings",
    "apply",
    "auto_factors",
    "dit_auto_factor",
    "downsample_kv",
    "downsampled_grid",
    "grid_for_tokens",
    "has_hooks",
    "joint_attention",
    "layout_of",
    "networks_of",
    "level_grid",
    "patch_forge_patcher",
    "patch_unet_patcher",
    "patched",
    "remove",
    "resolve_factors",
]
