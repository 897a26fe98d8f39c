"""modules/processing.py: the job objects, `process_images` and `create_infotext`, in A1111 1.10's order.

`process_images(p)`: `before_process` -> override_settings applied (restored in `finally`) ->
`process_images_inner`: `process` -> `p.init` -> per batch (`n_iter`): `before_process_batch`,
`process_batch`, conds, `p.sample(...)`, `post_sample`, decode, `postprocess_batch`,
`postprocess_batch_list`, per image `postprocess_image`, `postprocess_image_after_composite`, infotext ->
`postprocess`. An exception from sampling propagates out and `postprocess` never runs (as in A1111).

`p.sample`: txt2img calls `process_before_every_sampling(p, x=, noise=, c=, uc=)` then samples; with hires
fix, `sample_hr_pass` upscales the latent (latent upscale modes only), sets `is_hr_pass`, calls
`before_hr` then `process_before_every_sampling` again, and samples `hr_second_pass_steps or steps` steps.
img2img calls the hook with `x=init_latent` and samples `t_enc + 1` steps.

On a Forge model (`sd_model.forge_objects`), each pass first resets `sd_model.forge_objects` to
`forge_objects_after_applying_lora.shallow_copy()` as Forge does. Current Forge's hires pass runs
`before_hr`, the hook, the reset, and the hook again (only the second patch survives); with the
"reforge" flavour it runs `before_hr`, the reset, and the hook once.

Without a VAE, "images" are the final latents (one CxHxW tensor per image; `(latent + 1) / 2` clamped to
0..1, as the real decode step maps the decoded image), and `init_images` for img2img are latents.
"""

from __future__ import annotations

import random
from contextlib import closing
from typing import Any

import torch
import torch.nn.functional as F

from modules import errors, infotext_utils, scripts, sd_models, sd_samplers, shared
from modules.shared import opts, state

opt_C = 4
opt_f = 8
VERSION = "v1.10.1"


class DecodedSamples(list):
    already_decoded = True


class ImageRNG:
    """rng.ImageRNG: the first `next()` gives each image the noise of its seed; later calls continue."""

    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(shape)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


def get_fixed_seed(seed: Any) -> Any:
    if seed == "" or seed is None:
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    if seed == -1:
        return int(random.randrange(4294967294))
    return seed


class StableDiffusionProcessing:
    # constructor arguments and their defaults (the dataclass fields with init=True)
    FIELDS: dict[str, Any] = {
        "outpath_samples": None,
        "outpath_grids": None,
        "prompt": "",
        "prompt_for_display": None,
        "negative_prompt": "",
        "styles": None,
        "seed": -1,
        "subseed": -1,
        "subseed_strength": 0,
        "seed_resize_from_h": -1,
        "seed_resize_from_w": -1,
        "seed_enable_extras": True,
        "sampler_name": "Euler",
        "scheduler": None,
        "batch_size": 1,
        "n_iter": 1,
        "steps": 50,
        "cfg_scale": 7.0,
        "width": 512,
        "height": 512,
        "restore_faces": None,
        "tiling": None,
        "do_not_save_samples": False,
        "do_not_save_grid": False,
        "extra_generation_params": None,
        "overlay_images": None,
        "eta": None,
        "do_not_reload_embeddings": False,
        "denoising_strength": None,
        "ddim_discretize": None,
        "s_min_uncond": None,
        "s_churn": None,
        "s_tmax": None,
        "s_tmin": None,
        "s_noise": None,
        "override_settings": None,
        "override_settings_restore_afterwards": True,
        "sampler_index": None,
        "refiner_checkpoint": None,
        "refiner_switch_at": None,
        "disable_extra_networks": False,
        "firstpass_image": None,
    }
    token_merging_ratio = 0
    token_merging_ratio_hr = 0

    def __init__(self, sd_model: Any = None, **kwargs: Any) -> None:
        fields = {}
        for cls in reversed(type(self).__mro__):
            fields.update(getattr(cls, "FIELDS", {}))
        unknown = set(kwargs) - set(fields)
        if unknown:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected keyword arguments {sorted(unknown)}")
        self.scripts_value = None
        self.script_args_value = None
        self.scripts_setup_complete = False
        for name, default in fields.items():
            setattr(self, name, kwargs.get(name, default))
        # fields with init=False
        self.comments = {}
        self.sampler = None
        self.is_using_inpainting_conditioning = False
        self.paste_to = None
        self.is_hr_pass = False
        self.c = None
        self.uc = None
        self.rng = None
        self.step_multiplier = 1
        self.color_corrections = None
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.iteration = 0
        self.main_prompt = self.main_negative_prompt = None
        self.prompts = self.negative_prompts = self.seeds = self.subseeds = None
        self.extra_network_data = None
        self.user = None
        self.sd_model_name = self.sd_model_hash = self.sd_vae_name = self.sd_vae_hash = None
        self.is_api = False
        self.modified_noise = None  # Forge
        self.__post_init__()

    def __post_init__(self) -> None:
        self.styles = self.styles or []
        self.sampler_noise_scheduler_override = None
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.script_args = self.script_args or {}
        if not self.seed_enable_extras:
            self.subseed = -1
            self.subseed_strength = 0
            self.seed_resize_from_h = 0
            self.seed_resize_from_w = 0

    @property
    def sd_model(self) -> Any:
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value: Any) -> None:
        pass

    @property
    def scripts(self) -> Any:
        return self.scripts_value

    @scripts.setter
    def scripts(self, value: Any) -> None:
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self) -> Any:
        return self.script_args_value

    @script_args.setter
    def script_args(self, value: Any) -> None:
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self) -> None:
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    def fill_fields_from_opts(self) -> None:
        self.s_min_uncond = self.s_min_uncond if self.s_min_uncond is not None else opts.s_min_uncond
        self.s_churn = self.s_churn if self.s_churn is not None else opts.s_churn
        self.s_tmin = self.s_tmin if self.s_tmin is not None else opts.s_tmin
        self.s_tmax = (self.s_tmax if self.s_tmax is not None else opts.s_tmax) or float("inf")
        self.s_noise = self.s_noise if self.s_noise is not None else opts.s_noise

    def txt2img_image_conditioning(self, x: torch.Tensor, width=None, height=None) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 5, 1, 1)

    def init(self, all_prompts, all_seeds, all_subseeds) -> None:
        pass

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        raise NotImplementedError()

    def close(self) -> None:
        self.sampler = None
        self.c = None
        self.uc = None

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        if for_hr:
            return (
                self.token_merging_ratio_hr
                or opts.token_merging_ratio_hr
                or self.token_merging_ratio
                or opts.token_merging_ratio
            )
        return self.token_merging_ratio or opts.token_merging_ratio

    def setup_prompts(self) -> None:
        n = self.batch_size * self.n_iter
        self.all_prompts = list(self.prompt) if isinstance(self.prompt, list) else n * [self.prompt]
        neg = self.negative_prompt
        self.all_negative_prompts = list(neg) if isinstance(neg, list) else n * [neg]
        if len(self.all_prompts) != len(self.all_negative_prompts):
            raise RuntimeError("Received a different number of prompts and negative prompts")
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]

    def setup_conds(self) -> None:
        self.uc = self.sd_model.get_learned_conditioning(self.negative_prompts)
        self.c = self.sd_model.get_learned_conditioning(self.prompts)

    def get_conds(self) -> tuple:
        return self.c, self.uc

    def parse_extra_network_prompts(self) -> None:
        pass

    def reset_forge_objects(self, for_hr: bool = False) -> None:
        """Forge: patches live only for one pass (processing.py, before every sampler call)."""
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio(for_hr=for_hr))

    def save_samples(self) -> bool:
        return False


class Processed:
    def __init__(
        self,
        p,
        images_list,
        seed=-1,
        info="",
        subseed=None,
        all_prompts=None,
        all_negative_prompts=None,
        all_seeds=None,
        all_subseeds=None,
        index_of_first_image=0,
        infotexts=None,
        comments="",
    ):
        self.images = images_list
        self.prompt = p.prompt if not isinstance(p.prompt, list) else p.prompt[0]
        self.negative_prompt = p.negative_prompt if not isinstance(p.negative_prompt, list) else p.negative_prompt[0]
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{comment}\n" for comment in p.comments)
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.sd_model_name = p.sd_model_name
        self.sd_model_hash = p.sd_model_hash
        self.denoising_strength = getattr(p, "denoising_strength", None)
        self.extra_generation_params = p.extra_generation_params  # the same dict, as in A1111
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = state.job_timestamp
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.version = VERSION

    def infotext(self, p, index):
        return create_infotext(
            p,
            self.all_prompts,
            self.all_seeds,
            self.all_subseeds,
            comments=[],
            position_in_batch=index % self.batch_size,
            iteration=index // self.batch_size,
        )


def create_infotext(
    p,
    all_prompts,
    all_seeds,
    all_subseeds,
    comments=None,
    iteration=0,
    position_in_batch=0,
    use_main_prompt=False,
    index=None,
    all_negative_prompts=None,
):
    """The real builder: fixed fields, then `**p.extra_generation_params`, then Version/User; a list value
    picks `[index]`, a callable is called with `**locals()`; None values are dropped; each entry is written
    `key: quote(value)`, or bare `key` when key == value."""
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts

    clip_skip = getattr(p, "clip_skip", opts.CLIP_stop_at_last_layers)
    enable_hr = getattr(p, "enable_hr", False)
    token_merging_ratio = p.get_token_merging_ratio()
    token_merging_ratio_hr = p.get_token_merging_ratio(for_hr=True)
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]

    generation_params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model_hash if opts.add_model_hash_to_info else None,
        "Model": p.sd_model_name if opts.add_model_name_to_info else None,
        "Variation seed": (
            None if p.subseed_strength == 0 else (p.all_subseeds[0] if use_main_prompt else all_subseeds[index])
        ),
        "Variation seed strength": None if p.subseed_strength == 0 else p.subseed_strength,
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "Token merging ratio": None if token_merging_ratio == 0 else token_merging_ratio,
        "Token merging ratio hr": None if not enable_hr or token_merging_ratio_hr == 0 else token_merging_ratio_hr,
        "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
        "Tiling": "True" if p.tiling else None,
        **p.extra_generation_params,
        "Version": VERSION if opts.add_version_to_infotext else None,
        "User": p.user if opts.add_user_name_to_info else None,
    }

    for key, value in generation_params.items():
        try:
            if isinstance(value, list):
                generation_params[key] = value[index]
            elif callable(value):
                generation_params[key] = value(**locals())
        except Exception:
            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            generation_params[key] = None

    text = ", ".join(
        [k if k == v else f"{k}: {infotext_utils.quote(v)}" for k, v in generation_params.items() if v is not None]
    )
    negative_prompt_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative_prompt_text}\n{text}".strip()


def process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)

    stored_opts = {
        k: opts.data[k] if k in opts.data else opts.get_default(k) for k in p.override_settings if k in opts.data
    }
    try:
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
        sd_models.apply_token_merging(p.sd_model, p.get_token_merging_ratio())
        res = process_images_inner(p)
    finally:
        sd_models.apply_token_merging(p.sd_model, 0)
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)
    return res


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    seed = get_fixed_seed(p.seed)
    subseed = get_fixed_seed(p.subseed)
    p.restore_faces = opts.face_restoration if p.restore_faces is None else p.restore_faces
    p.tiling = opts.tiling if p.tiling is None else p.tiling
    p.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = shared.sd_model.sd_model_hash
    p.fill_fields_from_opts()
    p.setup_prompts()
    p.all_seeds = (
        seed
        if isinstance(seed, list)
        else [int(seed) + (x if p.subseed_strength == 0 else 0) for x in range(len(p.all_prompts))]
    )
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + x for x in range(len(p.all_prompts))]

    if p.scripts is not None:
        p.scripts.process(p)

    infotexts = []
    output_images = []
    with torch.no_grad():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        if state.job_count == -1:
            state.job_count = p.n_iter

        for n in range(p.n_iter):
            p.iteration = n
            if state.skipped:
                state.skipped = False
            if state.interrupted or state.stopping_generation:
                break

            p.prompts = p.all_prompts[n * p.batch_size : (n + 1) * p.batch_size]
            p.negative_prompts = p.all_negative_prompts[n * p.batch_size : (n + 1) * p.batch_size]
            p.seeds = p.all_seeds[n * p.batch_size : (n + 1) * p.batch_size]
            p.subseeds = p.all_subseeds[n * p.batch_size : (n + 1) * p.batch_size]
            channels = getattr(shared.sd_model, "latent_channels", opt_C)
            p.rng = ImageRNG((channels, p.height // opt_f, p.width // opt_f), p.seeds, subseeds=p.subseeds)

            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
            if len(p.prompts) == 0:
                break
            p.parse_extra_network_prompts()
            if p.scripts is not None:
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)

            p.setup_conds()
            samples = p.sample(
                conditioning=p.c,
                unconditional_conditioning=p.uc,
                seeds=p.seeds,
                subseeds=p.subseeds,
                subseed_strength=p.subseed_strength,
                prompts=p.prompts,
            )

            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples)
                p.scripts.post_sample(p, ps)
                samples = ps.samples

            x_samples = samples if getattr(samples, "already_decoded", False) else list(samples)  # "VAE decode"
            x_samples = torch.clamp((torch.stack(list(x_samples)).float() + 1.0) / 2.0, min=0.0, max=1.0)
            state.nextjob()

            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x_samples, batch_number=n)
                p.prompts = p.all_prompts[n * p.batch_size : (n + 1) * p.batch_size]
                p.negative_prompts = p.all_negative_prompts[n * p.batch_size : (n + 1) * p.batch_size]
                batch_params = scripts.PostprocessBatchListArgs(list(x_samples))
                p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
                x_samples = batch_params.images

            def infotext(index=0, use_main_prompt=False):
                return create_infotext(
                    p,
                    p.prompts,
                    p.seeds,
                    p.subseeds,
                    use_main_prompt=use_main_prompt,
                    index=index,
                    all_negative_prompts=p.negative_prompts,
                )

            for i, image in enumerate(x_samples):
                p.batch_index = i
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    pp = scripts.PostprocessImageArgs(pp.image)
                    p.scripts.postprocess_image_after_composite(p, pp)
                    image = pp.image
                infotexts.append(infotext(i))
                output_images.append(image)

        if not infotexts:
            infotexts.append(Processed(p, []).infotext(p, 0))

        index_of_first_image = 0
        unwanted_grid = len(output_images) < 2 and opts.grid_only_if_multiple
        if opts.return_grid and not p.do_not_save_grid and not unwanted_grid:
            infotexts.insert(0, infotext(use_main_prompt=True))
            output_images.insert(0, torch.cat(list(output_images), dim=-1))  # the "grid": images side by side
            index_of_first_image = 1

    res = Processed(
        p,
        images_list=output_images,
        seed=p.all_seeds[0],
        info=infotexts[0],
        subseed=p.all_subseeds[0],
        index_of_first_image=index_of_first_image,
        infotexts=infotexts,
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    FIELDS = {
        "enable_hr": False,
        "denoising_strength": 0.75,
        "firstphase_width": 0,
        "firstphase_height": 0,
        "hr_scale": 2.0,
        "hr_upscaler": None,
        "hr_second_pass_steps": 0,
        "hr_resize_x": 0,
        "hr_resize_y": 0,
        "hr_checkpoint_name": None,
        "hr_sampler_name": None,
        "hr_scheduler": None,
        "hr_prompt": "",
        "hr_negative_prompt": "",
        "force_task_id": None,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hr_checkpoint_info = None
        self.hr_upscale_to_x = 0
        self.hr_upscale_to_y = 0
        self.truncate_x = 0
        self.truncate_y = 0
        self.latent_scale_mode = None
        self.hr_c = None
        self.hr_uc = None
        self.all_hr_prompts = self.all_hr_negative_prompts = None
        self.hr_prompts = self.hr_negative_prompts = None
        if self.firstphase_width != 0 or self.firstphase_height != 0:
            self.hr_upscale_to_x = self.width
            self.hr_upscale_to_y = self.height
            self.width = self.firstphase_width
            self.height = self.firstphase_height

    def calculate_target_resolution(self) -> None:
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)
            return
        self.extra_generation_params["Hires resize"] = f"{self.hr_resize_x}x{self.hr_resize_y}"
        if self.hr_resize_y == 0:
            self.hr_upscale_to_x = self.hr_resize_x
            self.hr_upscale_to_y = self.hr_resize_x * self.height // self.width
        elif self.hr_resize_x == 0:
            self.hr_upscale_to_x = self.hr_resize_y * self.width // self.height
            self.hr_upscale_to_y = self.hr_resize_y
        else:
            target_w, target_h = self.hr_resize_x, self.hr_resize_y
            if self.width / self.height < self.hr_resize_x / self.hr_resize_y:
                self.hr_upscale_to_x = self.hr_resize_x
                self.hr_upscale_to_y = self.hr_resize_x * self.height // self.width
            else:
                self.hr_upscale_to_x = self.hr_resize_y * self.width // self.height
                self.hr_upscale_to_y = self.hr_resize_y
            self.truncate_x = (self.hr_upscale_to_x - target_w) // opt_f
            self.truncate_y = (self.hr_upscale_to_y - target_h) // opt_f

    def init(self, all_prompts, all_seeds, all_subseeds) -> None:
        if not self.enable_hr:
            return
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        if self.hr_sampler_name is not None and self.hr_sampler_name != self.sampler_name:
            self.extra_generation_params["Hires sampler"] = self.hr_sampler_name

        def get_hr_prompt(p, index, prompt_text, **kwargs):
            hr_prompt = p.all_hr_prompts[index]
            return hr_prompt if hr_prompt != prompt_text else None

        def get_hr_negative_prompt(p, index, negative_prompt, **kwargs):
            hr_negative_prompt = p.all_hr_negative_prompts[index]
            return hr_negative_prompt if hr_negative_prompt != negative_prompt else None

        self.extra_generation_params["Hires prompt"] = get_hr_prompt
        self.extra_generation_params["Hires negative prompt"] = get_hr_negative_prompt
        self.extra_generation_params["Hires schedule type"] = None
        if self.hr_scheduler is None:
            self.hr_scheduler = self.scheduler

        mode = self.hr_upscaler if self.hr_upscaler is not None else shared.latent_upscale_default_mode
        self.latent_scale_mode = shared.latent_upscale_modes.get(mode)
        if self.latent_scale_mode is None:
            raise Exception(f"could not find upscaler named {self.hr_upscaler} (the stand-in has latent modes only)")
        self.calculate_target_resolution()
        if self.hr_second_pass_steps:
            self.extra_generation_params["Hires steps"] = self.hr_second_pass_steps
        if self.hr_upscaler is not None:
            self.extra_generation_params["Hires upscaler"] = self.hr_upscaler

    def setup_prompts(self) -> None:
        super().setup_prompts()
        if not self.enable_hr:
            return
        if self.hr_prompt == "":
            self.hr_prompt = self.prompt
        if self.hr_negative_prompt == "":
            self.hr_negative_prompt = self.negative_prompt
        n = self.batch_size * self.n_iter
        self.all_hr_prompts = list(self.hr_prompt) if isinstance(self.hr_prompt, list) else n * [self.hr_prompt]
        neg = self.hr_negative_prompt
        self.all_hr_negative_prompts = list(neg) if isinstance(neg, list) else n * [neg]

    def parse_extra_network_prompts(self) -> None:
        if self.enable_hr:
            i, b = self.iteration, self.batch_size
            self.hr_prompts = self.all_hr_prompts[i * b : (i + 1) * b]
            self.hr_negative_prompts = self.all_hr_negative_prompts[i * b : (i + 1) * b]

    def setup_conds(self) -> None:
        super().setup_conds()
        self.hr_uc = None
        self.hr_c = None

    def calculate_hr_conds(self) -> None:
        if self.hr_c is not None:
            return
        self.hr_uc = self.sd_model.get_learned_conditioning(self.hr_negative_prompts)
        self.hr_c = self.sd_model.get_learned_conditioning(self.hr_prompts)

    def get_conds(self) -> tuple:
        return (self.hr_c, self.hr_uc) if self.is_hr_pass else super().get_conds()

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        if sd_samplers.is_forge(self.sd_model):
            self.reset_forge_objects()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.sampler.sample(
            self, x, conditioning, unconditional_conditioning, image_conditioning=self.txt2img_image_conditioning(x)
        )
        del x
        if not self.enable_hr:
            return samples
        return self.sample_hr_pass(samples, None, seeds, subseeds, subseed_strength, prompts)

    def sample_hr_pass(self, samples, decoded_samples, seeds, subseeds, subseed_strength, prompts):
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        target_width, target_height = self.hr_upscale_to_x, self.hr_upscale_to_y
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        samples = F.interpolate(
            samples,
            size=(target_height // opt_f, target_width // opt_f),
            mode=self.latent_scale_mode["mode"],
            antialias=self.latent_scale_mode["antialias"],
        )
        image_conditioning = self.txt2img_image_conditioning(samples)
        state.nextjob()
        samples = samples[
            :,
            :,
            self.truncate_y // 2 : samples.shape[2] - (self.truncate_y + 1) // 2,
            self.truncate_x // 2 : samples.shape[3] - (self.truncate_x + 1) // 2,
        ]
        self.rng = ImageRNG(samples.shape[1:], self.seeds, subseeds=self.subseeds)
        noise = self.rng.next()
        self.calculate_hr_conds()

        hook_kwargs = {"p": self, "x": samples, "noise": noise, "c": self.hr_c, "uc": self.hr_uc}
        if not sd_samplers.is_forge(self.sd_model):
            sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio(for_hr=True))
            if self.scripts is not None:
                self.scripts.before_hr(self)
                self.scripts.process_before_every_sampling(**hook_kwargs)
        elif getattr(self.sd_model, "stub_forge_flavour", "forge") == "forge":
            if self.scripts is not None:
                self.scripts.before_hr(self)
                self.scripts.process_before_every_sampling(**hook_kwargs)
            self.reset_forge_objects(for_hr=True)
            if self.scripts is not None:
                self.scripts.process_before_every_sampling(**hook_kwargs)
        else:
            if self.scripts is not None:
                self.scripts.before_hr(self)
            self.reset_forge_objects(for_hr=True)
            if self.scripts is not None:
                self.scripts.process_before_every_sampling(**hook_kwargs)

        samples = self.sampler.sample_img2img(
            self,
            samples,
            noise,
            self.hr_c,
            self.hr_uc,
            steps=self.hr_second_pass_steps or self.steps,
            image_conditioning=image_conditioning,
        )
        if not sd_samplers.is_forge(self.sd_model):
            sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio())
        self.sampler = None
        decoded = DecodedSamples(samples)
        self.is_hr_pass = False
        return decoded

    def close(self) -> None:
        super().close()
        self.hr_c = None
        self.hr_uc = None


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    FIELDS = {
        "init_images": None,
        "resize_mode": 0,
        "denoising_strength": 0.75,
        "image_cfg_scale": None,
        "mask": None,
        "mask_blur_x": 4,
        "mask_blur_y": 4,
        "mask_blur": None,
        "mask_round": True,
        "inpainting_fill": 0,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 0,
        "inpainting_mask_invert": 0,
        "initial_noise_multiplier": None,
        "latent_mask": None,
        "force_task_id": None,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_mask = self.mask
        self.mask = None
        self.nmask = None
        self.image_conditioning = None
        self.init_img_hash = None
        self.mask_for_overlay = None
        self.init_latent = None
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = opts.initial_noise_multiplier

    def init(self, all_prompts, all_seeds, all_subseeds) -> None:
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.image_cfg_scale = None  # not an edit model
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        if self.image_mask is not None:
            raise NotImplementedError("the stand-in has no inpainting")
        size = (self.height // opt_f, self.width // opt_f)
        if self.init_images:  # latents here: (C, h, w) tensors, resized to the job size like the real images
            latents = [F.interpolate(img[None].float(), size=size, mode="bilinear")[0] for img in self.init_images]
        else:
            gen = torch.Generator().manual_seed(int(all_seeds[0]) + 7)
            latents = [torch.randn(opt_C, *size, generator=gen)]
        if len(latents) == 1:
            latents = latents * self.batch_size
        elif len(latents) <= self.batch_size:
            self.batch_size = len(latents)
        else:
            raise RuntimeError(f"bad number of images passed: {len(latents)}; expecting {self.batch_size} or less")
        self.init_latent = torch.stack(latents)
        self.image_conditioning = self.init_latent.new_zeros(self.init_latent.shape[0], 5, 1, 1)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        x = self.rng.next()
        if self.initial_noise_multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = self.initial_noise_multiplier
            x *= self.initial_noise_multiplier
        if sd_samplers.is_forge(self.sd_model):
            self.reset_forge_objects()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        return self.sampler.sample_img2img(
            self,
            self.init_latent,
            x,
            conditioning,
            unconditional_conditioning,
            image_conditioning=self.image_conditioning,
        )

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        return (
            self.token_merging_ratio
            or ("token_merging_ratio" in self.override_settings and opts.token_merging_ratio)
            or opts.token_merging_ratio_img2img
            or opts.token_merging_ratio
        )


def run_job(p: StableDiffusionProcessing) -> Processed:
    """What modules/txt2img.py and img2img.py do with a job (inside the webui's state.begin/end):
    run the selected script if any, else `process_images`; close `p` either way."""
    state.begin(job="txt2img" if isinstance(p, StableDiffusionProcessingTxt2Img) else "img2img")
    try:
        with closing(p):
            processed = p.scripts.run(p, *p.script_args) if p.scripts is not None else None
            if processed is None:
                processed = process_images(p)
        return processed
    finally:
        state.end()
