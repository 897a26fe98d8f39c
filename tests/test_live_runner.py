"""The live-test runner (tools/live/run_webui.py) and its checkpoint maker, without a webui.

What can be checked on CI: bad input is one line and exit 2, the launch command each webui gets (API only,
loopback, its CPU flags, offline unless asked), the requirement filter, the extension links (made, refused,
removed), and the checkpoint's CLIP and VAE parts (keys, shapes, no zero weights).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

LIVE = Path(__file__).resolve().parents[1] / "tools" / "live"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"live_{name}", LIVE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runner = load("run_webui")
checkpoint = load("checkpoint")


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    """A folder that looks like a webui to the runner: launch.py, a venv python, the repositories it needs."""
    (tmp_path / "launch.py").write_text("")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    for name in runner.A1111_REPOSITORIES:
        (tmp_path / "repositories" / name).mkdir(parents=True)
    return tmp_path


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = runner.main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--webui", "neo"], "--root"),
        (["--webui", "comfy", "--root", "."], "invalid choice: 'comfy'"),
        (["--webui", "neo", "--root", "/no/such/webui"], "no launch.py there"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv: list[str], says: str) -> None:
    code, err = run_main(capsys, *argv)
    assert code == 2 and len(err) == 1 and says in err[0], err


def test_bad_paths_are_one_line_and_exit_2(capsys, webui: Path, tmp_path: Path) -> None:
    base = ["--webui", "a1111", "--root", str(webui)]
    cases = {
        "no such file": ["--tests", "tests/no_such_test.py"],
        "not a folder": ["--extension", str(tmp_path / "nowhere")],
        "no python at": ["--python", str(tmp_path / "nope" / "python")],
        "only a .safetensors file can be made": ["--checkpoint", str(tmp_path / "model.ckpt")],
    }
    for says, extra in cases.items():
        code, err = run_main(capsys, *base, *extra)
        assert code == 2 and len(err) == 1 and says in err[0], (extra, err)


def test_missing_repositories_are_named(capsys, webui: Path) -> None:
    (webui / "repositories" / "BLIP").rmdir()
    code, err = run_main(capsys, "--webui", "reforge", "--root", str(webui))
    assert code == 2 and len(err) == 1 and "lacks BLIP" in err[0], err


def parsed(webui: Path, *extra: str):
    args = runner.parse_args(["--root", str(webui), *extra])
    runner.validate(args)
    return args


@pytest.mark.parametrize(
    ("name", "cpu_flag"),
    [("a1111", "--use-cpu"), ("forge", "--always-cpu"), ("reforge", "--always-cpu"), ("neo", "--cpu")],
)
def test_launch_command_is_api_only_on_loopback_offline(webui: Path, name: str, cpu_flag: str) -> None:
    (webui / "repositories" / "huggingface_guess").mkdir()
    args = parsed(webui, "--webui", name, "--webui-arg=--foo")
    cmd = runner.launch_command(args, runner.PROFILES[name], 7999)
    joined = " ".join(cmd)
    assert cmd[:2] == [str(webui / "venv" / "bin" / "python"), "launch.py"]
    assert "--nowebui --server-name 127.0.0.1 --port 7999" in joined and cpu_flag in cmd
    assert "--listen" not in cmd and "--skip-prepare-environment" in cmd and cmd[-1] == "--foo"
    assert cmd[cmd.index("--ui-settings-file") + 1] == str(webui / runner.SETTINGS_NAME)
    model = cmd[cmd.index(runner.PROFILES[name].ckpt_flag) + 1]
    assert model == str(args.checkpoint if name != "neo" else args.checkpoint.parent)
    assert runner.server_env(args)["HF_HUB_OFFLINE"] == "1"
    online = parsed(webui, "--webui", name, "--prepare-environment")
    assert "--skip-prepare-environment" not in runner.launch_command(online, runner.PROFILES[name], 7999)
    assert runner.server_env(online).get("HF_HUB_OFFLINE") == os.environ.get("HF_HUB_OFFLINE")


def test_tests_come_from_the_flag_then_the_environment(webui: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parsed(webui, "--webui", "neo").tests == list(runner.DEFAULT_TESTS)
    monkeypatch.setenv("TODO_LIVE_TESTS", "tests/test_live_runner.py tests/test_live_webui.py")
    assert parsed(webui, "--webui", "neo").tests == ["tests/test_live_runner.py", "tests/test_live_webui.py"]
    assert parsed(webui, "--webui", "neo", "--tests", "tests/test_live_runner.py").tests == [
        "tests/test_live_runner.py"
    ]
    args = runner.parse_args(["--webui", "neo", "--root", str(webui), "--", "-k", "hires"])
    assert args.pytest_args == ["-k", "hires"]


def test_requirements_drop_the_old_setuptools_pin_and_replace_what_pypi_lacks(tmp_path: Path, capsys) -> None:
    requirements = tmp_path / "requirements_versions.txt"
    requirements.write_text(
        "setuptools==69.5.1  # temp fix\nGitPython==3.1.32\n\n# a comment\n"
        "https://github.com/Panchovix/pydantic-fixreforge/releases/download/main_v1/pydantic-1.10.15-py3-none-any.whl\n"
        "torch\n"
    )
    lines = runner.filtered_requirements(requirements, runner.PROFILES["reforge"])
    assert lines == ["GitPython==3.1.32", "pydantic==1.10.15", "torch"]
    out = capsys.readouterr().out
    assert "'setuptools==69.5.1' left out" in out and "replaced by 'pydantic==1.10.15'" in out


def test_extension_links_are_made_then_removed(webui: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-ext"
    other.mkdir()
    extensions = webui / "extensions"
    with runner.linked_extensions(webui, {runner.EXTENSION_NAME: runner.REPO, "other-ext": other}):
        assert (extensions / runner.EXTENSION_NAME).resolve() == runner.REPO
        assert (extensions / "other-ext").resolve() == other.resolve()
    assert list(extensions.iterdir()) == []


def test_no_todo_links_only_the_other_extensions(webui: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other-ext"
    other.mkdir()
    args = parsed(webui, "--webui", "a1111", "--no-todo", "--extension", str(other))
    assert runner.extension_links(args) == {"other-ext": other}
    assert runner.extension_links(parsed(webui, "--webui", "a1111")) == {runner.EXTENSION_NAME: runner.REPO}
    (webui / "extensions" / runner.EXTENSION_NAME).mkdir(parents=True)
    code, err = run_main(capsys, "--webui", "a1111", "--root", str(webui), "--no-todo")
    assert code == 2 and len(err) == 1 and "move it away" in err[0], err


def test_an_existing_link_to_the_same_folder_is_kept(webui: Path) -> None:
    link = webui / "extensions" / runner.EXTENSION_NAME
    link.parent.mkdir()
    link.symlink_to(runner.REPO, target_is_directory=True)
    with runner.linked_extensions(webui, {runner.EXTENSION_NAME: runner.REPO}):
        pass
    assert link.is_symlink()


def test_a_foreign_folder_under_the_name_is_refused_and_kept(webui: Path) -> None:
    installed = webui / "extensions" / runner.EXTENSION_NAME
    installed.mkdir(parents=True)
    (installed / "keep.txt").write_text("user's copy")
    with pytest.raises(runner.UsageError, match="is not a link"):
        with runner.linked_extensions(webui, {runner.EXTENSION_NAME: runner.REPO}):
            pass
    assert (installed / "keep.txt").read_text() == "user's copy"


def test_checkpoint_clip_text_tower_has_clip_l_keys_and_shapes() -> None:
    state = checkpoint.clip_text_state(seed=0)
    prefix = "cond_stage_model.transformer.text_model."
    assert all(k.startswith(prefix) for k in state)
    state = {k[len(prefix) :]: v for k, v in state.items()}
    assert len(state) == 3 + 12 * 16 + 2
    assert state["embeddings.token_embedding.weight"].shape == (49408, 768)
    assert state["embeddings.position_ids"].tolist() == [list(range(77))]
    assert state["encoder.layers.11.mlp.fc1.weight"].shape == (3072, 768)
    assert state["encoder.layers.11.mlp.fc2.weight"].shape == (768, 3072)
    assert all(v.any() for k, v in state.items() if k.endswith("weight") and v.dim() == 2)
    assert torch.equal(state["final_layer_norm.weight"], torch.ones(768))
    again = checkpoint.clip_text_state(seed=0)[prefix + "encoder.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(again, state["encoder.layers.0.self_attn.q_proj.weight"]), "not deterministic"


def test_checkpoint_vae_has_the_kl_autoencoder_layout() -> None:
    pytest.importorskip("ldm")
    state = checkpoint.vae_state(seed=0)
    assert state["first_stage_model.quant_conv.weight"].shape == (8, 8, 1, 1)
    assert state["first_stage_model.post_quant_conv.weight"].shape == (4, 4, 1, 1)
    assert state["first_stage_model.encoder.conv_in.weight"].shape == (128, 3, 3, 3)
    assert state["first_stage_model.decoder.conv_out.weight"].shape == (3, 128, 3, 3)
    assert state["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)


def test_family_picks_the_checkpoint_and_the_tests(webui: Path) -> None:
    flux = parsed(webui, "--webui", "neo", "--family", "flux")
    assert flux.checkpoint.name == "todo-random-flux.safetensors" and flux.tests == ["tests/test_live_family.py"]
    sd15 = parsed(webui, "--webui", "neo")
    assert sd15.checkpoint.name == "todo-random-sd15.safetensors" and sd15.tests == list(runner.DEFAULT_TESTS)
    # A DiT run also makes the SD1.5 checkpoint beside its own: the model-switch test goes there and back.
    assert runner.checkpoints_needed(flux) == {
        flux.checkpoint: "flux",
        flux.checkpoint.parent / "todo-random-sd15.safetensors": "sd15",
    }
    assert runner.checkpoints_needed(sd15) == {sd15.checkpoint: "sd15"}
    assert set(runner.FAMILY_TESTS) <= set(checkpoint.FAMILIES), "every family the runner offers can be made"


def test_unknown_family_is_one_line_and_exit_2(capsys, webui: Path) -> None:
    code, err = run_main(capsys, "--webui", "neo", "--root", str(webui), "--family", "sd3")
    assert code == 2 and len(err) == 1 and "invalid choice: 'sd3'" in err[0], err
    assert checkpoint.main(["--family", "sd3", str(webui / "x.safetensors")]) == 2
    assert "--family 'sd3': use one of" in capsys.readouterr().err


def test_written_safetensors_read_back_with_the_safetensors_library(tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {
        "a.weight": torch.randn(3, 5).to(torch.float8_e4m3fn),
        "b.bias": torch.randn(7).to(torch.bfloat16),
        "c.ids": torch.arange(77)[None],
        "d.scale": torch.ones(3, dtype=torch.float16),
    }
    path = tmp_path / "t.safetensors"
    assert checkpoint.write_safetensors(path, iter(tensors.items()), {"who": "test"}) == 4
    back = safetensors_torch.load_file(str(path))
    assert set(back) == set(tensors)
    for key, value in tensors.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key].float(), value.float()), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"], "temporary files left behind"


def test_a_bad_tensor_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="non-finite"):
        checkpoint.write_safetensors(path, iter([("ok", torch.ones(2)), ("bad", torch.tensor([float("nan")]))]), {})
    assert list(tmp_path.iterdir()) == []


def flux_dit() -> dict[str, torch.Tensor]:
    specs = checkpoint.flux_dit_specs(checkpoint.FLUX_HIDDEN, 1, 1)
    return dict(checkpoint.materialise(specs, seed=0, dtype=torch.bfloat16))


def test_flux_transformer_reads_as_flux_dev_with_one_block_of_each_kind() -> None:
    """What Forge Neo's detection reads: hidden size from img_in/txt_in, heads = hidden / 128, block counts."""
    state = flux_dit()
    hidden = checkpoint.FLUX_HIDDEN
    assert state["img_in.weight"].shape == (hidden, 64) and state["txt_in.weight"].shape == (hidden, 4096)
    assert state["vector_in.in_layer.weight"].shape == (hidden, 768)
    assert "guidance_in.in_layer.weight" in state, "dev layout (guidance embedding)"
    assert state["double_blocks.0.img_attn.norm.key_norm.scale"].shape == (128,)
    assert {k.split(".")[1] for k in state if k.startswith("double_blocks.")} == {"0"}
    assert {k.split(".")[1] for k in state if k.startswith("single_blocks.")} == {"0"}
    assert state["single_blocks.0.linear1.weight"].shape == (3 * hidden + 4 * hidden, hidden)
    assert state["final_layer.linear.weight"].shape == (64, hidden)
    assert all(v.any() for k, v in state.items()), "an all-zero tensor would hide attention from the pixels"
    again = flux_dit()
    assert all(torch.equal(again[k], v) for k, v in state.items()), "not deterministic"
    with pytest.raises(ValueError, match="multiple of the head dim"):
        checkpoint.flux_dit_specs(200, 1, 1)


def test_t5_xxl_keeps_its_published_size() -> None:
    specs = {w.key: w for w in checkpoint.t5_encoder_specs()}
    assert len(specs) == 1 + 24 * 9 + 1 + 1
    assert sum(torch.Size(w.shape).numel() for w in specs.values()) == 4_762_310_656
    assert specs["shared.weight"].shape == (32128, 4096)
    assert specs["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"].shape == (10240, 4096)
    assert specs["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape == (32, 64)
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in specs
    # float8_e4m3fn keeps them non-zero: the smallest std is q's, (4096 * 64) ** -0.5 ~ 2e-3, the smallest subnormal
    q = next(checkpoint.materialise([specs["encoder.block.0.layer.0.SelfAttention.q.weight"]], 0, torch.float8_e4m3fn))
    assert q[1].float().count_nonzero() > 0.5 * q[1].numel()


def test_commit_is_exported_clean_and_reused(tmp_path: Path, capsys) -> None:
    folder, sha = runner.export_commit("HEAD", tmp_path)
    assert folder == tmp_path / "todo-live-commits" / sha and (folder / "tools" / "live" / "run_webui.py").is_file()
    assert not (folder / ".git").exists() and not (folder / ".venv-ci").exists(), "only the committed files"
    assert runner.export_commit(sha, tmp_path) == (folder, sha)
    with pytest.raises(runner.UsageError, match="not a commit"):
        runner.export_commit("no-such-revision-anywhere", tmp_path)


def test_sdxl_unet_has_the_published_layout_and_size() -> None:
    specs = {w.key: w for w in checkpoint.sdxl_unet_specs()}
    assert sum(torch.Size(w.shape).numel() for w in specs.values()) == 2_567_463_684  # SDXL base's UNet
    assert specs["label_emb.0.0.weight"].shape == (1280, 2816)
    assert specs["input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"].shape == (640, 2048)
    assert "input_blocks.7.1.transformer_blocks.9.attn1.to_q.weight" in specs  # depth 10 at 1280
    assert "input_blocks.7.1.transformer_blocks.10.attn1.to_q.weight" not in specs
    assert "input_blocks.1.1.norm.weight" not in specs, "no attention at the first level"
    assert specs["output_blocks.2.2.conv.weight"].shape == (1280, 1280, 3, 3)
    assert specs["output_blocks.8.0.skip_connection.weight"].shape == (320, 640, 1, 1)
    # The layers ldm/sgm zero-initialise (attention proj_out, ResBlock out_layers.3, out.2) are random here.
    assert all(w.std > 0 for w in specs.values() if len(w.shape) > 1)
    bigg = {w.key: w for w in checkpoint.open_clip_bigg_specs()}
    assert sum(torch.Size(w.shape).numel() for w in bigg.values()) == 694_659_840
    assert bigg["transformer.resblocks.31.attn.in_proj_weight"].shape == (3840, 1280)


def test_ui_starts_the_webui_with_its_ui_and_tells_the_tests(webui: Path) -> None:
    args = parsed(webui, "--webui", "neo", "--ui")
    cmd = runner.launch_command(args, runner.PROFILES["neo"], 7999)
    assert "--api" in cmd and "--nowebui" not in cmd
    assert "--nowebui" in runner.launch_command(parsed(webui, "--webui", "neo"), runner.PROFILES["neo"], 7999)


def test_zimage_transformer_reads_as_z_image_with_one_main_layer() -> None:
    """What Forge Neo's detection reads: a NextDiT with cap_embedder and noise_refiner k norms is Lumina 2; width
    3840 makes it Z-Image (30 heads of 128); it counts the main layers; the pad tokens make it pad to 32."""
    specs = {w.key: w for w in checkpoint.zimage_dit_specs(1)}
    assert specs["cap_embedder.1.weight"].shape == (3840, 2560), "width 3840 from Qwen3-4B's 2560 features"
    assert specs["noise_refiner.0.attention.k_norm.weight"].shape == (128,)
    assert specs["x_embedder.weight"].shape == (3840, 64) and specs["final_layer.linear.weight"].shape == (64, 3840)
    assert specs["layers.0.attention.qkv.weight"].shape == (3 * 3840, 3840)
    assert specs["layers.0.feed_forward.w1.weight"].shape == (10240, 3840)
    assert specs["layers.0.adaLN_modulation.0.weight"].shape == (4 * 3840, 256), "Z-Image's modulation"
    assert "context_refiner.1.adaLN_modulation.0.weight" not in specs, "the context refiners are not modulated"
    assert {k.split(".")[1] for k in specs if k.startswith("layers.")} == {"0"}
    assert {k.split(".")[1] for k in specs if k.startswith(("noise_refiner.", "context_refiner."))} == {"0", "1"}
    assert "cap_pad_token" in specs and "x_pad_token" in specs
    assert sum(torch.Size(w.shape).numel() for w in specs.values()) == 908_508_992
    # No layer left at zero where the published init zeroes it (modulations, final layer): all random.
    assert all(w.std > 0 for w in specs.values() if len(w.shape) > 1 and not w.key.endswith("norm.weight"))
    two = {w.key for w in checkpoint.zimage_dit_specs(2)}
    assert two - set(specs) == {k.replace("layers.0.", "layers.1.") for k in specs if k.startswith("layers.0.")}


def test_qwen3_4b_keeps_its_published_size() -> None:
    specs = {w.key: w for w in checkpoint.qwen3_4b_specs()}
    assert len(specs) == 1 + 36 * 11 + 1
    assert sum(torch.Size(w.shape).numel() for w in specs.values()) == 4_022_468_096  # Qwen3-4B, LM head tied
    assert specs["model.embed_tokens.weight"].shape == (151936, 2560)
    assert specs["model.layers.35.self_attn.q_proj.weight"].shape == (4096, 2560)
    assert specs["model.layers.35.self_attn.k_proj.weight"].shape == (1024, 2560)
    assert specs["model.layers.0.mlp.down_proj.weight"].shape == (2560, 9728)
    # float8_e4m3fn keeps N(0, 0.02) weights non-zero (its smallest subnormal is 2 ** -9 ~ 2e-3)
    q = next(checkpoint.materialise([specs["model.layers.0.self_attn.q_proj.weight"]], 0, torch.float8_e4m3fn))
    assert q[1].float().count_nonzero() > 0.9 * q[1].numel()
