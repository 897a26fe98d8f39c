"""The benchmark: `python -m lib_todo.bench --quick` on CPU, and its attention kernels and configurations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lib_todo import bench

REPO = Path(__file__).resolve().parent.parent
ROW_FIELDS = {
    "model",
    "kernel",
    "size",
    "config",
    "ms",
    "speedup",
    "ideal_ms",
    "share_of_ideal",
    "peak_mb",
    "rel_change",
    "applied",
    "rounds",
    "error",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [sys.executable, "-m", "lib_todo.bench", "--quick", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), out, done.stdout


def test_quick_json_shape(quick_run):
    data, out, stdout = quick_run
    assert data["device"] and data["device_type"] == "cpu"
    assert {"python", "torch", "diffusers"} <= set(data["versions"])
    assert data["versions"]["torch"] == torch.__version__
    assert data["args"]["quick"] is True and data["timestamp"]
    rows = data["rows"]
    assert rows and all(ROW_FIELDS <= set(r) for r in rows)
    assert not [r for r in rows if r["error"]]
    configs = {r["config"] for r in rows}
    assert {"baseline", "bound", "auto", "f2", "f2+l2"} <= configs
    assert out.with_suffix(".png").stat().st_size > 1000
    assert stdout.startswith("| model | kernel | size | config |")


def test_quick_rows_are_consistent(quick_run):
    rows = quick_run[0]["rows"]
    for r in rows:
        assert r["ms"] > 0 and r["rounds"] >= 3 and r["peak_mb"] is None
        if r["config"] == "baseline":
            assert r["speedup"] == 1.0 and r["rel_change"] == 0.0
        else:
            assert 0.0 < r["rel_change"] < 1.0 or r["applied"] == "1x/1x"
        if r["config"] == "f2":
            assert r["applied"] == "2x/1x" and r["ideal_ms"] > 0 and r["share_of_ideal"] > 0
        if r["config"] == "f2+l2":
            assert r["applied"] == "2x/2x" and r["ideal_ms"] is None


def test_quick_todo_is_faster_at_the_largest_size(quick_run):
    rows = quick_run[0]["rows"]
    largest = max(r["width_px"] * r["height_px"] for r in rows)
    todo = [r for r in rows if r["width_px"] * r["height_px"] == largest and r["config"] in ("f2", "f2+l2")]
    assert len(todo) == 2
    for r in todo:
        assert r["speedup"] > 1.0, r


def test_chunked_attention_matches_sdpa():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 50, 8, generator=gen)
    k, v = torch.randn(2, 3, 20, 8, generator=gen), torch.randn(2, 3, 20, 8, generator=gen)
    ref = F.scaled_dot_product_attention(q, k, v)
    small = bench.chunked_attention(q, k, v, limit=2 * 3 * 20 * 4 * 7)  # 7 query rows per chunk
    torch.testing.assert_close(small, ref)
    torch.testing.assert_close(bench.chunked_attention(q, k, v), ref)


@pytest.mark.parametrize("name", ["sd15", "ldm-sd15"])
def test_kernels_agree_and_configs_restore(name):
    torch.set_num_threads(1)
    model = bench.load_model(name, 32, torch.device("cpu"))
    assert len(model.level1) == 5
    args, kwargs = model.inputs(128, 128)
    with model.context():
        base = model.call(args, kwargs)
        with bench.attention_kernel(model.unet, model.family, "chunked"):
            chunked = model.call(args, kwargs)
            for config in bench.make_configs([2.0], {"bound", "f", "f+l2", "tome"}, with_tome=True):
                with model.configured(config):
                    assert bench.rel_change(model.call(args, kwargs), base) > 1e-4
        again = model.call(args, kwargs)
    assert bench.rel_change(chunked, base) < 1e-5
    assert torch.equal(again, base)


def test_parse_size():
    assert bench.parse_size("512") == (512, 512)
    assert bench.parse_size("1000x744") == (1000, 744)
    with pytest.raises(Exception, match="multiples of 8"):
        bench.parse_size("1001")
