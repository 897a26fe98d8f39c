"""Stand-in for modules/processing.py: the job classes, `process_images` and `create_infotext`.

The script hooks the extension uses, in A1111 1.10's order: `process_images(p)` runs `process`, the job's
`init`, and per batch (`n_iter`): `process_batch`, sampling (below), `post_sample`, decoding and the
infotext of each image; at last `postprocess`. An exception from sampling propagates, so `postprocess` is
then skipped, as in the webui. (The other hooks, `override_settings`, grids, init images and interrupts are
not modelled: no test needs them.)

Sampling: txt2img calls `process_before_every_sampling(p, x=, noise=, c=, uc=)` and samples; with hires
fix the latent is resized (bilinear, i.e. the "Latent" upscaler), `p.is_hr_pass` is set, the hook runs
again, and `hr_second_pass_steps or steps` steps are sampled. img2img starts from a seeded random latent
(`x=init_latent` for the hook) and samples `t_enc + 1` steps.

Forge models (those with `sd_model.forge_objects`): before each pass `forge_objects` is reset to a
shallow copy of `forge_objects_after_applying_lora`. Current Forge's hires pass runs the hook, the reset
and the hook again (the first call patches the old pass's clone; only the second hook's patch is used);
the "reforge" and "neo" flavours run the reset and the hook once.

There is no VAE: an output "image" is the final latent mapped to 0..1 by `(latent + 1) / 2`.
"""

from __future__ import annotations

import random
from contextlib import closing
from typing import Any

import torch
import torch.nn.functional as F

from modules import infotext_utils, scripts, sd_samplers, shared

VERSION = "v1.10.1"
LATENT_CHANNELS = 4
PIXELS_PER_LATENT = 8


class ImageRNG:
    """Noise per image: the first `next()` gives each image its seed's noise, later calls continue."""

    def __init__(self, shape: tuple, seeds: list[int]) -> None:
        self.shape = tuple(shape)
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=gen) for gen in self.generators])


def _seed_or_random(seed: Any) -> int:
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        seed = -1
    return random.randrange(2**32 - 1) if seed == -1 else seed


def _blank_image_cond(latent: torch.Tensor) -> torch.Tensor:
    return latent.new_zeros(latent.shape[0], 5, 1, 1)  # ignored by the crossattn-only stand-in models


class StableDiffusionProcessing:
    """A job. Keyword arguments are the fields below (and the subclass's); anything else is a TypeError."""

    FIELDS: dict[str, Any] = {
        "prompt": "",
        "negative_prompt": "",
        "styles": None,
        "seed": -1,
        "sampler_name": "Euler",
        "batch_size": 1,
        "n_iter": 1,
        "steps": 50,
        "cfg_scale": 7.0,
        "width": 512,
        "height": 512,
        "denoising_strength": None,
        "do_not_save_samples": False,
        "do_not_save_grid": False,
        "extra_generation_params": None,
        "refiner_checkpoint": None,
        "refiner_switch_at": None,
    }

    def __init__(self, sd_model: Any = None, **kwargs: Any) -> None:
        known: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            known.update(vars(klass).get("FIELDS", {}))
        extra = sorted(set(kwargs) - set(known))
        if extra:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {extra}")
        for name, default in known.items():
            setattr(self, name, kwargs.get(name, default))
        self.styles = list(self.styles or [])
        self.extra_generation_params = self.extra_generation_params or {}
        self.scripts = None
        self.script_args = None
        self.is_api = False
        self.is_hr_pass = False
        self.sampler = None
        self.c = self.uc = None
        self.rng = None
        self.refiner_checkpoint_info = None
        self.iteration = 0
        self.all_prompts = self.all_negative_prompts = self.all_seeds = None
        self.prompts = self.negative_prompts = self.seeds = None

    @property
    def sd_model(self) -> Any:
        """Always the loaded model, as in the webui."""
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value: Any) -> None:
        pass

    def _hooks_before_sampling(self, **hook_kwargs: Any) -> None:
        if sd_samplers.is_forge(self.sd_model):
            self.reset_forge_objects()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, **hook_kwargs)

    def reset_forge_objects(self) -> None:
        """Forge: patches on `forge_objects` live for one sampling pass only."""
        model = self.sd_model
        model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()

    def init(self) -> None:
        """Per job, after the `process` hook."""

    def sample(self) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        self.sampler = None
        self.c = self.uc = None


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    FIELDS = {"enable_hr": False, "denoising_strength": 0.75, "hr_scale": 2.0, "hr_second_pass_steps": 0}

    def init(self) -> None:
        self.hr_upscale_to_x = self.hr_upscale_to_y = 0
        if not self.enable_hr:
            return
        self.hr_upscale_to_x = int(self.width * self.hr_scale)
        self.hr_upscale_to_y = int(self.height * self.hr_scale)
        written = self.extra_generation_params
        written["Denoising strength"] = self.denoising_strength
        written["Hires upscale"] = self.hr_scale
        if self.hr_second_pass_steps:
            written["Hires steps"] = self.hr_second_pass_steps

    def sample(self) -> torch.Tensor:
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        noise = self.rng.next()
        self._hooks_before_sampling(x=noise, noise=noise, c=self.c, uc=self.uc)
        latent = self.sampler.sample(self, noise, self.c, self.uc, image_conditioning=_blank_image_cond(noise))
        if self.enable_hr:
            latent = self._hires_pass(latent)
        return latent

    def _hires_pass(self, latent: torch.Tensor) -> torch.Tensor:
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        size = (self.hr_upscale_to_y // PIXELS_PER_LATENT, self.hr_upscale_to_x // PIXELS_PER_LATENT)
        latent = F.interpolate(latent, size=size, mode="bilinear")
        self.rng = ImageRNG(latent.shape[1:], self.seeds)
        noise = self.rng.next()
        hook_kwargs = {"x": latent, "noise": noise, "c": self.c, "uc": self.uc}
        runner = self.scripts
        if sd_samplers.is_forge(self.sd_model):
            if runner is not None and getattr(self.sd_model, "stub_forge_flavour", "forge") == "forge":
                runner.process_before_every_sampling(p=self, **hook_kwargs)  # patches the old pass's clone
            self.reset_forge_objects()
        if runner is not None:
            runner.process_before_every_sampling(p=self, **hook_kwargs)
        hr_steps = self.hr_second_pass_steps or self.steps
        image_cond = _blank_image_cond(latent)
        latent = self.sampler.sample_img2img(
            self, latent, noise, self.c, self.uc, steps=hr_steps, image_conditioning=image_cond
        )
        self.is_hr_pass = False
        return latent


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    FIELDS = {"denoising_strength": 0.75}

    def init(self) -> None:
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        size = (self.height // PIXELS_PER_LATENT, self.width // PIXELS_PER_LATENT)
        gen = torch.Generator().manual_seed(int(self.all_seeds[0]) + 7)  # stands in for the encoded init image
        self.init_latent = torch.stack([torch.randn(LATENT_CHANNELS, *size, generator=gen)] * self.batch_size)

    def sample(self) -> torch.Tensor:
        noise = self.rng.next()
        self._hooks_before_sampling(x=self.init_latent, noise=noise, c=self.c, uc=self.uc)
        image_cond = _blank_image_cond(self.init_latent)
        return self.sampler.sample_img2img(
            self, self.init_latent, noise, self.c, self.uc, image_conditioning=image_cond
        )


class Processed:
    """A job's result: `images` and their `infotexts` (no grid here, so `index_of_first_image` stays 0)."""

    def __init__(self, images: list, infotexts: list[str]) -> None:
        self.images = images
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.index_of_first_image = 0


def create_infotext(p: Any, all_prompts: list, all_seeds: list, index: int = 0) -> str:
    """Prompt, negative prompt and a `key: value, ...` line: the fixed fields, then the job's
    `extra_generation_params` (None drops an entry), then Version. The real function also takes per-image
    lists and callables as values; the extension writes strings only."""
    negative_prompt = p.negative_prompts[index]
    entries: dict[str, Any] = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "CFG scale": p.cfg_scale,
        "Seed": all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
    }
    entries.update(p.extra_generation_params)
    entries["Version"] = VERSION
    parts = [f"{key}: {infotext_utils.quote(value)}" for key, value in entries.items() if value is not None]
    head = all_prompts[index] + (f"\nNegative prompt: {negative_prompt}" if negative_prompt else "")
    return f"{head}\n{', '.join(parts)}".strip()


def _per_image(value: Any, count: int) -> list:
    return list(value) if isinstance(value, list) else [value] * count


def process_images(p: StableDiffusionProcessing) -> Processed:
    # As A1111's process_images: the refiner's checkpoint is looked up before the scripts' `process`.
    p.refiner_checkpoint_info = p.refiner_checkpoint or None
    total = p.batch_size * p.n_iter
    p.all_prompts = _per_image(p.prompt, total)
    p.all_negative_prompts = _per_image(p.negative_prompt, total)
    first_seed = _seed_or_random(p.seed)
    p.all_seeds = [first_seed + i for i in range(total)]
    runner = p.scripts
    if runner is not None:
        runner.process(p)

    images: list[torch.Tensor] = []
    texts: list[str] = []
    with torch.no_grad():
        p.init()
        for n in range(p.n_iter):
            p.iteration = n
            start, stop = n * p.batch_size, (n + 1) * p.batch_size
            p.prompts = p.all_prompts[start:stop]
            p.negative_prompts = p.all_negative_prompts[start:stop]
            p.seeds = p.all_seeds[start:stop]
            channels = getattr(p.sd_model, "latent_channels", LATENT_CHANNELS)
            latent_shape = (channels, p.height // PIXELS_PER_LATENT, p.width // PIXELS_PER_LATENT)
            p.rng = ImageRNG(latent_shape, p.seeds)
            if runner is not None:
                runner.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)

            p.uc = p.sd_model.get_learned_conditioning(p.negative_prompts)
            p.c = p.sd_model.get_learned_conditioning(p.prompts)
            latents = p.sample()
            if runner is not None:
                after_sampling = scripts.PostSampleArgs(latents)
                runner.post_sample(p, after_sampling)
                latents = after_sampling.samples

            decoded = ((latents.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # the stand-in's "VAE decode"
            for i, image in enumerate(decoded):
                p.batch_index = i
                texts.append(create_infotext(p, p.prompts, p.seeds, index=i))
                images.append(image)

    result = Processed(images, texts)
    if runner is not None:
        runner.postprocess(p, result)
    return result


def run_job(p: StableDiffusionProcessing) -> Processed:
    """What txt2img.py / img2img.py do with a job when no selectable script is chosen: `process_images`; the
    job is closed either way."""
    with closing(p):
        return process_images(p)
