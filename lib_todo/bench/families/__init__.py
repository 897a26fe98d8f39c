"""The model families of the bench, one module each (`unet.py`, `flux.py`; `dit.py` holds what DiT families
share). A family module imports the interface (`..family`) and lib_todo's core only, never the engine
(`..measure`, `..registry`, `..report`): the engine imports the families, not the other way round."""
