"""Backends: one module per model family and host, each installing ToDo its own way.

- `unet_hooks`: forward pre-hooks on A1111's ldm/sgm UNets and diffusers' UNet2DConditionModel.
- `forge_unet`: an attn1 patch on a Forge / reForge / Forge Neo UNet patcher.
"""
