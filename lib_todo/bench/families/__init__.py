"""The model families of the bench, one module each (`unet.py`, `flux.py`, `qwen.py`, `lumina.py` (Z-Image and
Lumina 2), `wan.py`, `anima.py`, `ernie.py`, `krea.py`; `dit.py` holds what DiT families share). A family module
imports the interface (`..family`) and lib_todo's core only, never the engine (`..measure`, `..registry`,
`..report`): the engine imports the families, not the other way round."""
