"""modules/sd_unet.py: `current_unet` is the active SdUnet (TensorRT etc.) or None; the stand-in never has one."""

current_unet = None
