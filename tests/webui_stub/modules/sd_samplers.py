"""Stand-in for the webui's samplers (sd_samplers_kdiffusion.py, sd_samplers_cfg_denoiser.py, ...): a tiny
real k-diffusion Euler through a CFG denoiser, or through Forge's `sampling_function` on Forge models.

Step bookkeeping as in the webui: `launch_sampling(steps)` sets `state.sampling_steps = steps` and
`state.sampling_step = 0`; k-diffusion's Euler calls the denoiser, then the step callback, which sets
`state.sampling_step = i`. So `CFGDenoiserParams.sampling_step` reads 0, 0, 1, ..., steps-2 over a pass
(the callback lags the denoiser by one call), `total_sampling_steps` is the pass's step count, and both
restart with the hires pass. img2img and the hires pass run `t_enc + 1` steps (`setup_img2img_steps`).

`inject_failure(step, hires)` makes the denoiser raise `InjectedFailure` at that step, which propagates out
of `process_images` as a real sampling error does (so the scripts' `postprocess` is skipped).
"""

from __future__ import annotations

from typing import Any

import torch

from modules import script_callbacks, sd_models, shared
from modules.script_callbacks import CFGDenoiserParams


class InjectedFailure(RuntimeError):
    pass


_failure: dict[str, Any] = {"step": None, "hires": False}


def inject_failure(step: int = 0, hires: bool = False) -> None:
    """Raise InjectedFailure in the denoiser at denoiser call `step` of the first pass or the hires pass."""
    _failure.update(step=step, hires=hires)


def clear_failure() -> None:
    _failure.update(step=None, hires=False)


def is_forge(sd_model: Any) -> bool:
    return hasattr(sd_model, "forge_objects")


def setup_img2img_steps(p: Any, steps: int | None = None) -> tuple[int, int]:
    if shared.opts.img2img_fix_steps or steps is not None:
        requested_steps = steps or p.steps
        steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested_steps - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


class CompVisDenoiser:
    """k-diffusion's CompVisDenoiser around the A1111 model: scale the input, sigma -> t, eps -> denoised."""

    def __init__(self, sd_model: Any) -> None:
        self.inner_model = sd_model

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        from lib_todo.bench.unets import a1111_skip_resize

        s = sigma.view(-1, 1, 1, 1)
        t = self.inner_model.schedule.sigma_to_t(sigma)
        with a1111_skip_resize():
            eps = self.inner_model.apply_model(x / (s**2 + 1) ** 0.5, t, cond)
        return x - eps * s


class CFGDenoiser:
    def __init__(self, sampler: KDiffusionSampler) -> None:
        self.sampler = sampler
        self.steps = None
        self.total_steps = None
        self.step = 0
        self.p = None

    @property
    def inner_model(self) -> Any:
        return CompVisDenoiser(shared.sd_model)

    def __call__(self, x, sigma, uncond, cond, cond_scale, image_cond):
        apply_refiner(self)
        state = shared.state
        batch_size = x.shape[0]
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        image_cond_in = torch.cat([image_cond, image_cond])
        params = CFGDenoiserParams(
            x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps, cond, uncond, self
        )
        script_callbacks.cfg_denoiser_callback(params)
        x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
        cond, uncond = params.text_cond, params.text_uncond

        if _failure["step"] == self.step and _failure["hires"] == bool(getattr(self.p, "is_hr_pass", False)):
            raise InjectedFailure(f"injected failure at denoiser step {self.step}")

        if is_forge(shared.sd_model):
            denoised = forge_sampling_function(x_in[:batch_size], sigma_in[:batch_size], cond, uncond, cond_scale)
        else:
            inner = self.inner_model
            cond_in = torch.cat([cond, uncond])

            def make_cond(c_crossattn: torch.Tensor, c_concat: torch.Tensor) -> dict:
                return {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}

            # cond and uncond in one UNet call, as with the default `batch_cond_uncond` (the setting is not modelled)
            x_out = inner(x_in, sigma_in, cond=make_cond(cond_in, image_cond_in))
            denoised_uncond = x_out[batch_size:]
            denoised = denoised_uncond + (x_out[:batch_size] - denoised_uncond) * cond_scale

        self.step += 1
        return denoised


def apply_refiner(cfg_denoiser: CFGDenoiser) -> bool:
    """sd_samplers_common.apply_refiner, switching by sampling steps: once `refiner_switch_at` of the pass's
    steps are done, the refiner checkpoint is loaded (`reload_model_weights`, which runs the model_loaded
    callbacks) and sampling goes on with it. Forge Neo does the same unless `refiner_fast_sd` is on."""
    p = cfg_denoiser.p
    title, switch_at = getattr(p, "refiner_checkpoint_info", None), getattr(p, "refiner_switch_at", None)
    if not title or switch_at is None or cfg_denoiser.step / cfg_denoiser.total_steps < switch_at:
        return False
    if getattr(shared.sd_model, "sd_checkpoint_info", None) == title:
        return False
    p.extra_generation_params["Refiner"] = title
    p.extra_generation_params["Refiner switch at"] = switch_at
    sd_models.reload_model_weights(info=title)
    return True


def forge_sampling_function(x, sigma, cond, uncond, cond_scale) -> torch.Tensor:
    """backend/sampling/sampling_function.py for one cond and one uncond: the patcher is read per call from
    `sd_model.forge_objects.unet`; both go in one batch, uncond first (`cond_or_uncond=[1, 0]`); cfg 1 skips
    the uncond unless `disable_cfg1_optimization`; the model is called through the patcher's
    `model_function_wrapper` when one is set."""
    unet = shared.sd_model.forge_objects.unet
    model_options = unet.model_options
    skip_uncond = cond_scale == 1.0 and not model_options.get("disable_cfg1_optimization", False)
    cond_or_uncond = [0] if skip_uncond else [1, 0]
    chunks = {0: (x, cond), 1: (x, uncond)}
    b = int(sigma.shape[0])

    to = dict(model_options.get("transformer_options", {}))
    to["cond_or_uncond"] = cond_or_uncond[:]
    to["sigmas"] = sigma
    to["cond_mark"] = torch.tensor([cx for cx in cond_or_uncond for _ in range(b)], dtype=sigma.dtype)
    to["cond_indices"] = [i * b + j for i, cx in enumerate(cond_or_uncond) if cx == 0 for j in range(b)]
    to["uncond_indices"] = [i * b + j for i, cx in enumerate(cond_or_uncond) if cx == 1 for j in range(b)]

    input_x = torch.cat([chunks[cx][0] for cx in cond_or_uncond])
    context = torch.cat([chunks[cx][1] for cx in cond_or_uncond])
    sigmas = torch.cat([sigma] * len(cond_or_uncond))
    c = {"c_crossattn": context, "transformer_options": to}
    wrapper = model_options.get("model_function_wrapper")  # e.g. MultiDiffusion's tiling, ToDo on Flux
    if wrapper is None:
        out = unet.model.apply_model(input_x, sigmas, **c)
    else:
        args = {"input": input_x, "timestep": sigmas, "c": c, "cond_or_uncond": cond_or_uncond[:]}
        out = wrapper(unet.model.apply_model, args)
    out = out.chunk(len(cond_or_uncond))
    preds = dict(zip(cond_or_uncond, out, strict=True))
    if skip_uncond:
        return preds[0]
    return preds[1] + (preds[0] - preds[1]) * cond_scale


def sample_euler(model, x, sigmas, extra_args, callback) -> torch.Tensor:
    """k_diffusion.sampling.sample_euler (no churn): denoise, report step i, step to the next sigma."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = (x - denoised) / sigmas[i]
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


class KDiffusionSampler:
    def __init__(self, name: str, sd_model: Any) -> None:
        self.name = name
        self.model_wrap_cfg = CFGDenoiser(self)
        self.p = None

    def get_sigmas(self, p: Any, steps: int) -> torch.Tensor:
        return shared.sd_model.schedule.get_sigmas(steps)

    def callback_state(self, d: dict) -> None:
        shared.state.sampling_step = d["i"]  # k-diffusion reports step i after the denoiser's i-th call

    def launch_sampling(self, steps: int, func: Any) -> torch.Tensor:
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps
        shared.state.sampling_steps = steps
        shared.state.sampling_step = 0
        return func()

    def initialize(self, p: Any) -> None:
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.step = 0

    def _extra_args(self, p, conditioning, unconditional_conditioning, image_conditioning) -> dict:
        """The keyword arguments every denoiser call gets."""
        return {
            "cond": conditioning,
            "uncond": unconditional_conditioning,
            "cond_scale": p.cfg_scale,
            "image_cond": image_conditioning,
        }

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        x = x * sigmas[0]
        self.initialize(p)
        args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        return self.launch_sampling(
            steps, lambda: sample_euler(self.model_wrap_cfg, x, sigmas, args, self.callback_state)
        )

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        steps, t_enc = setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1 :]
        xi = x + noise * sigma_sched[0]
        self.initialize(p)
        args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        return self.launch_sampling(
            t_enc + 1, lambda: sample_euler(self.model_wrap_cfg, xi, sigma_sched, args, self.callback_state)
        )


def create_sampler(name: str, model: Any) -> KDiffusionSampler:
    return KDiffusionSampler(name or "Euler", model)
