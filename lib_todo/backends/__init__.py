"""Backends: one module per model family and host, each installing ToDo its own way.

- `unet_hooks`: forward pre-hooks on A1111's ldm/sgm UNets and diffusers' UNet2DConditionModel.
- `forge_unet`: an attn1 patch on a Forge / reForge / Forge Neo UNet patcher.
- `flux_forge`: Flux-family DiTs on Forge and Forge Neo: a UNet function wrapper that puts ToDo's joint
  attention in place of the model's attention function for one model call at a time.
- `flux_diffusers`: diffusers' FluxTransformer2DModel: wrapped attention processors.
"""
