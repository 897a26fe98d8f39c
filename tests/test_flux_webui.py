"""ToDo on Flux-family DiTs in Forge main, Forge Neo and reForge: the DiT engine (lib_todo.backends.dit, with the
Flux family of lib_todo.backends.flux, installed by lib_todo.backends.patch_forge_patcher) against the Flux
stand-ins in tests/webui_stub/stub_flux, and the webui script on them in the stand-in webui.

References are written out by hand: RoPE as complex rotation here; the kept image keys picked by index, the
balance bias as log(cell size) and softmax attention as an explicit product in tests/dit_reference.py.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from dit_reference import attention_by_hand, kept_keys

from lib_todo.backends import dit, flux, patch_forge_patcher
from lib_todo.joint_attention import ImageGrid, joint_attention
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import CLOSED_WINDOW, PassState

STUB = Path(__file__).resolve().parent / "webui_stub"
TODO = "ToDo"
BALANCE = inspect.signature(joint_attention).parameters["balance"].default
HEADS, HEAD_DIM = 2, 16


@pytest.fixture
def stub() -> Iterator[Any]:
    """The Flux stand-ins (package `stub_flux`), importable for one test, then forgotten."""
    sys.path.insert(0, str(STUB))
    try:
        import stub_flux

        yield stub_flux
    finally:
        sys.path.remove(str(STUB))
        for name in [n for n in sys.modules if n.split(".")[0] in ("stub_flux", "stub_models")]:
            del sys.modules[name]


# Hand references


def rope_by_hand(x: torch.Tensor, positions: torch.Tensor, axes_dim=(4, 6, 6), theta=10_000) -> torch.Tensor:
    """x (B, H, L, D) with each channel pair (a, b) read as a + ib and turned by its angle, per RoPE axis."""
    angles = []
    for axis, dim in enumerate(axes_dim):
        for j in range(dim // 2):
            angles.append(positions[..., axis].double() * theta ** (-2 * j / dim))
    angle = torch.stack(angles, dim=-1)[:, None]  # (B, 1, L, D/2)
    pairs = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle)).flatten(-2).to(x.dtype)


def todo_attention_by_hand(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, txt_len: int, grid: tuple[int, int], factor: int, image_first
) -> torch.Tensor:
    """ToDo by hand (tests/dit_reference.py) on (B, H, L, D): the image first or after the text; every other key
    (text, and reference tokens after the image) kept whole."""
    keep, bias = kept_keys(0 if image_first else txt_len, (1, *grid), factor, k.shape[2])
    return attention_by_hand(q, k, v, keep, bias if BALANCE else [0.0] * len(bias))


def joint_positions(batch: int, txt_len: int, grid: tuple[int, int], image_first: bool = False) -> torch.Tensor:
    """(B, L, 3) RoPE positions: text at 0, image token (r, c) at (0, r, c), in the sequence's order."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    image = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
    text = torch.zeros(txt_len, 3)
    parts = (image, text) if image_first else (text, image)
    return torch.cat(parts)[None].expand(batch, -1, -1)


def model_args(latent_hw: tuple[int, int], txt_len: int, batch: int = 1, **extra: Any) -> dict[str, Any]:
    """The `args` Forge's sampling function hands a UNet function wrapper."""
    x = torch.randn(batch, 16, *latent_hw, generator=torch.Generator().manual_seed(5))
    context = torch.randn(batch, txt_len, 24, generator=torch.Generator().manual_seed(6))
    c = {"c_crossattn": context, "transformer_options": {}, **extra}
    return {"input": x, "timestep": torch.ones(batch), "c": c, "cond_or_uncond": [0] * batch}


def wrapper_of(patcher: Any) -> Any:
    return patcher.model_options.get("model_function_wrapper")


def host_attention_function(module: Any) -> Any:
    return vars(module)["attention_function"]


# The backend: one attention call, by hand


@pytest.mark.parametrize("grid", [(4, 6), (5, 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_one_attention_call_in_a_joint_role_equals_the_hand_reference(stub, grid, balance):
    """HostAttention in place of Forge's attention_function, called as Flux's `attention()` calls it."""
    from stub_flux import forge_flux

    txt_len, b = 5, 2
    network = stub.make_network("forge")
    inst = dit.installation(flux.FORGE_FLUX, network)
    state = PassState(TodoPlan(TodoSettings(factor=2), flux.FORGE_FLUX.layout()))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, HEADS, txt_len + grid[0] * grid[1], HEAD_DIM, generator=gen) for _ in range(3))
    positions = joint_positions(b, txt_len, grid)
    pe = stub.parts.rotation_table(positions)
    call = dit.DitCall(ImageGrid(1, *grid), txt_len)
    with dit.call_scope(inst, dit.ActiveCall(call, state, balance)) as active:
        active.roles.append(dit.text_then_image)  # as the pre-hook of a double block does
        out = forge_flux.attention(q, k, v, pe)
        assert dit.installed_anywhere()

    q_rot, k_rot = rope_by_hand(q, positions), rope_by_hand(k, positions)
    expected = todo_attention_by_hand(q_rot, k_rot, v, txt_len, grid, 2, image_first=False)
    torch.testing.assert_close(out, expected.transpose(1, 2).flatten(2), rtol=1e-5, atol=1e-5)
    assert state.calls == 1 and state.applied == {1: 2.0}
    assert not dit.installed_anywhere()


def test_outside_a_role_the_original_runs_untouched(stub):
    """Cross-attention or a caption-only refiner: no scope module is running, so the host's kernel gets the call."""
    from stub_flux import forge_flux

    inst = dit.installation(flux.FORGE_FLUX, stub.make_network("forge"))
    state = PassState(TodoPlan(TodoSettings(factor=2), flux.FORGE_FLUX.layout()))
    q, k, v = (torch.randn(1, HEADS, 3 + 16, HEAD_DIM, generator=torch.Generator().manual_seed(i)) for i in range(3))
    with dit.call_scope(inst, dit.ActiveCall(dit.DitCall(ImageGrid(1, 4, 4), 3), state, "channel")):
        out = forge_flux.attention_function(q, k, v, HEADS, skip_reshape=True)
    assert torch.equal(out, forge_flux.attention_function(q, k, v, HEADS, skip_reshape=True))
    assert state.calls == 0 and state.skipped == {}


# The backend: whole models


def manual_todo(original: Any, txt_len: int, grid: tuple[int, int], factor: int, flipped: tuple[bool, ...] = ()):
    """An `attention_function` written for one known call: ToDo by hand on every joint attention."""

    def attention_function(q, k, v, heads, mask=None, skip_reshape=False, transformer_options=None, **kwargs):
        options = transformer_options or {}
        image_first = options.get("block_type") == "double" and flipped[options["block_index"]]
        out = todo_attention_by_hand(q, k, v, txt_len, grid, factor, image_first)
        return out.transpose(1, 2).flatten(2)

    return attention_function


HOSTS = {  # network kind -> (stand-in module of the attention function, its name there)
    "forge": ("forge_flux", "attention_function"),
    "forge-chroma": ("forge_flux", "attention_function"),  # Chroma's blocks call Flux's attention
    "neo": ("neo_flux", "attention_function"),
    "reforge": ("reforge_flux", "optimized_attention"),
}


@pytest.mark.parametrize(
    "kind, flipped, latent",
    [
        ("forge", (), (8, 12)),
        ("forge", (), (9, 11)),
        ("neo", (True, False), (8, 8)),
        ("forge-chroma", (), (8, 8)),
        ("reforge", (), (6, 10)),
    ],
)
def test_whole_model_equals_todo_by_hand_in_every_block(stub, kind, flipped, latent):
    module_name, function_name = HOSTS[kind]
    host_module = getattr(stub, module_name)
    network = stub.make_network(kind, **({"flipped": flipped} if flipped else {}))
    flavour = "neo" if kind == "neo" else "forge"
    patcher = stub.make_flux_model(flavour, network=network).forge_objects.unet
    args = model_args(latent, txt_len=5, batch=2)
    original = vars(host_module)[function_name]
    baseline = stub.call_patcher(patcher, args["input"], args["timestep"], args["c"])

    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    with torch.no_grad():
        out = stub.call_patcher(clone, args["input"], args["timestep"], args["c"])
    grid = (-(-latent[0] // 2), -(-latent[1] // 2))
    setattr(host_module, function_name, manual_todo(original, 5, grid, 2, flipped))
    try:
        with torch.no_grad():
            expected = network(
                args["input"] / 2**0.5,
                patcher.model.predictor.timestep(args["timestep"]) / 1000.0,
                context=args["c"]["c_crossattn"],
                transformer_options={},
            )
    finally:
        setattr(host_module, function_name, original)
    torch.testing.assert_close(out, args["input"] - expected, rtol=1e-4, atol=1e-4)
    assert not torch.equal(out, baseline)
    assert state.calls == len(network.double_blocks) + len(network.single_blocks)
    assert vars(host_module)[function_name] is original and not dit.installed_anywhere()
    assert wrapper_of(patcher) is None  # the original patcher is untouched


def test_factor_1_off_and_closed_window_are_bit_identical_with_nothing_installed(stub):
    patcher = stub.make_flux_model("forge").forge_objects.unet
    original = host_attention_function(stub.forge_flux)
    args = model_args((8, 8), txt_len=4)
    baseline = stub.call_patcher(patcher, args["input"], args["timestep"], args["c"])
    # off; factor 1 with level 2 left at auto (a DiT has no level 2); auto at 64 px
    for settings in (TodoSettings(factor=1, factor_level2=1), TodoSettings(factor=1), TodoSettings(factor=0)):
        clone, state = patch_forge_patcher(patcher, settings)
        assert torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
        assert state.calls == 0
        if settings.factor == 1:
            assert wrapper_of(clone) is None  # factor 1: nothing of ToDo on the clone at all
        else:
            assert state.silence_reason() is None  # auto asked for nothing at this size
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2, start=0.5))
    seen = []
    hook = patcher.model.diffusion_model.single_blocks[0].register_forward_pre_hook(
        lambda m, a: seen.append(host_attention_function(stub.forge_flux) is original)
    )
    assert torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
    state.set_progress(0.5)
    assert not torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
    hook.remove()
    assert seen == [True, False]  # outside the window the host's own function stayed in place
    assert state.skipped.get(CLOSED_WINDOW) == 1 and state.calls == 4
    assert host_attention_function(stub.forge_flux) is original


def test_an_exception_mid_call_restores_the_attention_function(stub):
    patcher = stub.make_flux_model("neo").forge_objects.unet
    original = host_attention_function(stub.neo_flux)
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))

    def fail(module, args):
        assert host_attention_function(stub.neo_flux) is not original  # ToDo is in place mid-call
        raise RuntimeError("interrupted")

    hook = patcher.model.diffusion_model.single_blocks[1].register_forward_pre_hook(fail)
    args = model_args((8, 8), txt_len=4)
    with pytest.raises(RuntimeError, match="interrupted"):
        stub.call_patcher(clone, args["input"], args["timestep"], args["c"])
    hook.remove()
    assert host_attention_function(stub.neo_flux) is original and not dit.installed_anywhere()
    assert state.calls == 3  # two double blocks and the first single block ran with ToDo


def test_a_model_load_puts_back_an_attention_function_left_replaced(webui, stub):
    webui.load_extension_script(forge_loader=True)
    inst = dit.installation(flux.FORGE_FLUX, stub.make_network("forge"))
    state = PassState(TodoPlan(TodoSettings(factor=2), flux.FORGE_FLUX.layout()))
    original = host_attention_function(stub.forge_flux)
    stuck = dit.call_scope(inst, dit.ActiveCall(dit.DitCall(ImageGrid(1, 4, 4), 3), state, "channel"))
    stuck.__enter__()  # a call that never came back (its thread killed), so its finally never ran
    assert host_attention_function(stub.forge_flux) is not original and dit.installed_anywhere()
    webui.set_model(stub.make_flux_model("forge"))  # on_model_loaded
    assert host_attention_function(stub.forge_flux) is original and not dit.installed_anywhere()


@pytest.mark.parametrize("flipped", [(), (True, False)])
def test_kontext_reference_tokens_are_kept_whole(stub, flipped):
    """Neo's Kontext: reference tokens follow the image; ToDo downsamples the image and keeps them, with no bias."""
    network = stub.make_network("neo", **({"flipped": flipped} if flipped else {}))
    patcher = stub.make_flux_model("neo", network=network).forge_objects.unet
    reference = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(9))
    args = model_args((8, 8), txt_len=4, ref_latents=[reference])
    baseline = stub.call_patcher(patcher, args["input"], args["timestep"], args["c"])
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    with torch.no_grad():
        out = stub.call_patcher(clone, args["input"], args["timestep"], args["c"])
    original = host_attention_function(stub.neo_flux)
    flips = tuple(block.flipped_img_txt for block in network.double_blocks)
    stub.neo_flux.attention_function = manual_todo(original, 4, (4, 4), 2, flips)
    try:
        with torch.no_grad():
            expected = stub.call_patcher(patcher, args["input"], args["timestep"], args["c"])
    finally:
        stub.neo_flux.attention_function = original
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert not torch.equal(out, baseline)
    assert state.calls == 4 and state.skipped == {}


def test_a_later_clone_of_the_patcher_keeps_working(stub):
    for flavour in ("forge", "neo"):
        patcher = stub.make_flux_model(flavour).forge_objects.unet
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2, stop=0.5))
        later = clone.clone()  # another extension, after ToDo (Forge deep-copies, Neo copies containers)
        later.set_transformer_option("probe", 1)
        assert wrapper_of(later) is wrapper_of(clone)
        args = model_args((8, 8), txt_len=4)
        stub.call_patcher(later, args["input"], args["timestep"], args["c"])
        state.set_progress(0.5)
        stub.call_patcher(later, args["input"], args["timestep"], args["c"])
        assert state.calls == 4 and state.skipped == {CLOSED_WINDOW: 1}, flavour


def test_a_wrapper_set_before_todo_still_runs_and_each_of_its_calls_gets_its_own_grid(stub):
    patcher = stub.make_flux_model("forge").forge_objects.unet
    tiles = []

    def two_tiles(apply_model, args):  # as MultiDiffusion does: the model called per tile
        halves = args["input"].chunk(2, dim=-1)
        tiles.extend(tuple(h.shape[-2:]) for h in halves)
        return torch.cat([apply_model(h, args["timestep"], **args["c"]) for h in halves], dim=-1)

    patcher.set_model_unet_function_wrapper(two_tiles)
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    args = model_args((8, 16), txt_len=4)
    stub.call_patcher(clone, args["input"], args["timestep"], args["c"])
    assert tiles == [(8, 8), (8, 8)]
    assert state.calls == 2 * 4 and state.skipped == {} and state.latent_hw == (4, 4)  # a tile's token grid
    assert wrapper_of(patcher) is two_tiles


def test_models_todo_cannot_serve_say_which_and_why(stub):
    from lib_todo.webui import models

    class JointBlocksDiT(torch.nn.Module):  # SD3 / Qwen-Image style: no Flux double and single blocks
        def __init__(self) -> None:
            super().__init__()
            self.joint_blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    class OwnAttentionBlock(torch.nn.Module):  # a Chroma variant whose blocks do not use Flux's attention
        def forward(self, x):
            return x

    class OwnAttentionDiT(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.double_blocks = torch.nn.ModuleList([OwnAttentionBlock()])
            self.single_blocks = torch.nn.ModuleList([OwnAttentionBlock()])

    class SVDQFluxTransformer2DModel(torch.nn.Module):  # Neo's Nunchaku Flux: attention inside fused kernels
        pass

    flux_model = stub.make_flux_model("forge")
    assert models.unsupported_reason(flux_model, None) is None and models.native_size(flux_model) is None
    assert models.dit_family_of(flux_model).native_px == 1024
    assert models.dit_family_of(stub.make_flux_model("neo")) is flux.FORGE_FLUX
    assert models.dit_family_of(stub.make_flux_model(network=stub.make_network("forge-chroma"))) is flux.FORGE_FLUX
    for network, words in (
        (JointBlocksDiT(), "JointBlocksDiT is not a model ToDo knows (it serves SD1.x, SD2.x, SDXL and Flux"),
        (OwnAttentionDiT(), "OwnAttentionBlock does not call attention_function or optimized_attention"),
        (SVDQFluxTransformer2DModel(), "Nunchaku's SVDQ Flux runs its attention inside fused kernels"),
    ):
        reason = models.unsupported_reason(stub.make_flux_model(network=network), None)
        assert reason and words in reason and "FluxForgeModel" in reason


# The webui script on Forge / Neo with a Flux checkpoint


def attention_replaced_per_call(webui: Any, module: Any, p: Any) -> list[tuple[bool, bool]]:
    """(is_hr_pass, ToDo's attention in place) at the first single block of every model call."""
    original = host_attention_function(module)
    seen: list[tuple[bool, bool]] = []
    network = webui.shared.sd_model.forge_objects.unet.model.diffusion_model
    network.single_blocks[0].register_forward_pre_hook(
        lambda m, a: seen.append((bool(p.is_hr_pass), host_attention_function(module) is not original))
    )
    return seen


@pytest.fixture(params=["forge", "neo"])
def flux_webui(request, webui):
    flavour = request.param
    webui.load_extension_script(forge_loader=True)
    import stub_flux

    webui.set_model(stub_flux.make_flux_model(flavour))
    webui.flux_module = stub_flux.neo_flux if flavour == "neo" else stub_flux.forge_flux
    return webui  # the webui fixture forgets stub_flux with the other stand-in modules


def test_flux_job_writes_what_ran_and_gives_the_patcher_back(flux_webui):
    webui = flux_webui
    model = webui.shared.sd_model
    original_patcher = model.forge_objects.unet
    original_function = host_attention_function(webui.flux_module)
    off = webui.txt2img({TODO: [False]}).processed.images[0]
    run = webui.txt2img({TODO: [True, 2]})
    webui.assert_no_errors()
    params = webui.params(run.processed)
    assert params["ToDo factor"] == "2" and params["ToDo applied"] == "2x"
    assert not torch.equal(run.processed.images[0], off)
    hires = webui.txt2img(
        {TODO: [True, 2, 1, "nearest-exact", 0.0, 1.0, "own factor", 4]},
        enable_hr=True,
        hr_scale=2,
        denoising_strength=1.0,
    )
    assert webui.params(hires.processed)["ToDo applied"] == "2x, hires 4x"
    assert model.forge_objects.unet is original_patcher and wrapper_of(original_patcher) is None
    assert host_attention_function(webui.flux_module) is original_function
    for args in ([True, 1, 1], [True, 0, 0]):  # factor 1; auto at 64 px (below Flux's native 1024 px)
        same = webui.txt2img({TODO: args})
        assert torch.equal(same.processed.images[0], off)
        assert not {k for k in webui.params(same.processed) if k.startswith("ToDo")}


def test_flux_step_window_restarts_with_the_hires_pass(flux_webui):
    webui = flux_webui
    p = webui.make_txt2img(
        {TODO: [True, 2, 1, "nearest-exact", 0.0, 0.5]},
        enable_hr=True,
        hr_scale=2,
        steps=4,
        hr_second_pass_steps=4,
        denoising_strength=1.0,
    )
    seen = attention_replaced_per_call(webui, webui.flux_module, p)
    webui.run_job(p)
    webui.assert_no_errors()
    first = [on for hr, on in seen if not hr]
    hires = [on for hr, on in seen if hr]
    assert first == [True, True, False, False] and hires[:2] == [True, True] and not any(hires[2:]), seen


def test_flux_job_that_raises_leaves_nothing_behind(flux_webui):
    webui = flux_webui
    model = webui.shared.sd_model
    original_patcher = model.forge_objects.unet
    original_function = host_attention_function(webui.flux_module)
    off = webui.txt2img({TODO: [False]}).processed.images[0]
    webui.inject_failure(step=1)
    with pytest.raises(webui.InjectedFailure):
        webui.txt2img({TODO: [True, 2]})
    webui.sd_samplers.clear_failure()
    assert host_attention_function(webui.flux_module) is original_function
    after = webui.txt2img({TODO: [False]})
    assert torch.equal(after.processed.images[0], off)
    assert model.forge_objects.unet is original_patcher


RECORD_PATCHER = """
from modules import scripts

SEEN = []


class RecordPatcher(scripts.Script):
    def title(self):
        return "Record patcher"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        SEEN.append(p.sd_model.forge_objects.unet)
"""


def test_a_job_that_raised_never_hands_its_patcher_to_the_next_model(webui, stub):
    webui.load_extension_script(start=False, forge_loader=True)
    probe = webui.load_script_text(RECORD_PATCHER, "record.py", "zz-record", forge_loader=True)
    webui.start()
    webui.set_model(stub.make_flux_model("forge"))
    webui.inject_failure(step=1)
    with pytest.raises(webui.InjectedFailure):
        webui.txt2img({TODO: [True, 2]})
    webui.sd_samplers.clear_failure()
    other = webui.set_model(stub.make_flux_model("forge", seed=1))
    own_patcher = other.forge_objects.unet
    webui.txt2img({TODO: [False]})  # ToDo's process() finishes the job that raised, then the probe looks
    webui.assert_no_errors()
    assert probe.SEEN[-1] is own_patcher


CLONE_AFTER_TODO = """
from modules import scripts


class CloneAfterTodo(scripts.Script):
    def title(self):
        return "Clone after ToDo"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_before_every_sampling(self, p, *args, **kwargs):
        unet = p.sd_model.forge_objects.unet.clone()
        unet.set_transformer_option("clone_after_todo", True)
        p.sd_model.forge_objects.unet = unet
"""


@pytest.mark.parametrize("flavour", ["forge", "neo"])
def test_flux_clone_made_after_todo_keeps_window_and_infotext(webui, stub, flavour):
    webui.load_extension_script(start=False, forge_loader=True)
    webui.load_script_text(CLONE_AFTER_TODO, "clone_after.py", "zz-clone-after", forge_loader=True)
    webui.start()
    webui.set_model(stub.make_flux_model(flavour))
    module = stub.neo_flux if flavour == "neo" else stub.forge_flux
    p = webui.make_txt2img({TODO: [True, 2, 1, "nearest-exact", 0.0, 0.5]}, steps=4)
    seen = attention_replaced_per_call(webui, module, p)
    processed = webui.run_job(p)
    webui.assert_no_errors()
    assert [on for _, on in seen] == [True, True, False, False]
    assert webui.params(processed)["ToDo applied"] == "2x"


def test_unsupported_dit_prints_which_and_runs_untouched(webui, stub, capsys):
    class OtherDiT(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer_blocks = torch.nn.ModuleList([torch.nn.Linear(16, 16)])

        def forward(self, x, timestep, context, **kwargs):
            return self.transformer_blocks[0](x.movedim(1, -1)).movedim(-1, 1)

    webui.load_extension_script(forge_loader=True)
    webui.set_model(stub.make_flux_model(network=OtherDiT()))
    off = webui.txt2img({TODO: [False]}).processed.images[0]
    run = webui.txt2img({TODO: [True, 2]})
    assert torch.equal(run.processed.images[0], off)
    out = capsys.readouterr().out
    assert "[ToDo] this model (FluxForgeModel) is not supported: OtherDiT is not a model ToDo knows" in out
    assert "ToDo is off for this job" in out
