"""ToDo: Token Downsampling for Stable Diffusion UNets (arXiv 2402.13573), in pure torch.

import lib_todo
handle = lib_todo.apply(unet, lib_todo.TodoSettings(factor=2))
...
handle.remove()
"""

from .downsample import downsample_kv
from .forge import patch_unet_patcher
from .grid import downsampled_grid, grid_for_tokens, level_grid
from .hooks import has_hooks
from .patch import TodoHandle, apply, patched, remove
from .plan import TodoState, UnetLayout, auto_factors, resolve_factors
from .settings import AUTO, HIRES_MODES, METHODS, ParsedSettings, TodoSettings

__version__ = "0.1.0"

__all__ = [
    "AUTO",
    "HIRES_MODES",
    "METHODS",
    "ParsedSettings",
    "TodoHandle",
    "TodoSettings",
    "TodoState",
    "UnetLayout",
    "apply",
    "auto_factors",
    "downsample_kv",
    "downsampled_grid",
    "grid_for_tokens",
    "has_hooks",
    "level_grid",
    "patch_unet_patcher",
    "patched",
    "remove",
    "resolve_factors",
]
