"""What every DiT family in diffusers must satisfy, on each family's small real model (tests/dit_diffusers_cases.py:
Anima, Ernie-Image, Krea 2, Qwen-Image, Wan, Lumina 2, Z-Image, Flux), through lib_todo.apply / patched:

- the table (`backends.dit_family`) knows the class;
- on a small call at factor 2, ToDo serves every image attention call and equals the ORIGINAL model with its kernel
  doing ToDo by hand (tests/dit_reference.py);
- factor 1 installs nothing and is bit-identical;
- nothing of ToDo is left in the model after remove() (by the pipeline holding it), after a forward, or after an
  exception mid-forward: no hook (`dit_diffusers.has_todo`), no kernel replaced (`dit.installed_anywhere()`, every
  kernel slot holds the host's own again), every processor the one it was;
- auto is off far below the native size (bit-identical, nothing counted, no silence reason) and acts (factor 2)
  when told a native size half the call's;
- outside the step window nothing changes and each attention call is counted as skipped; inside it ToDo acts.

What ToDo computes on each family's other calls (border cells, balance modes, references, masks, frames, ...) is
checked in the family's own module."""

from __future__ import annotations

import importlib
import types

import pytest
import torch
from dit_diffusers_cases import CASES, processors, run, run_by_hand

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family

attention_dispatch = pytest.importorskip("diffusers.models.attention_dispatch")
HOSTS_OWN = {  # what each kind of kernel slot holds outside a forward: the host's own
    "dispatch_attention_fn": attention_dispatch.dispatch_attention_fn,
    "F": torch.nn.functional,  # Lumina 2's processor calls F.scaled_dot_product_attention
}


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def built(request):
    """(the family's row, its small model), built once for this module."""
    pytest.importorskip(request.param.module)
    return request.param, request.param.build()


def assert_nothing_left(case, model, before: list) -> None:
    assert not dit_diffusers.has_todo(model) and not dit.installed_anywhere()
    for namespace, name in dit.installation(case.family, model).slots:
        assert namespace[name] is HOSTS_OWN[name]
    assert all(a is b for a, b in zip(processors(model), before, strict=True))


def test_the_table_knows_the_class(built):
    case, model = built
    assert dit_family(model, "diffusers") is case.family


def test_equals_todo_written_by_hand_on_a_small_call(built):
    """At factor 2 ToDo serves every image attention call and the output is the ORIGINAL model's with its kernel
    doing ToDo by hand (tests/dit_reference.py) on those calls: the family descriptor reads the grid, where the image
    sits among the keys and which calls to serve as the model has them."""
    case, model = built
    inputs = case.small(model)
    plain = run(model, inputs)
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        got = run(model, inputs)
    assert handle.applied == {1: 2.0} and handle.state.calls == case.calls and handle.state.skipped == {}
    hand = case.by_hand()
    expected = run_by_hand(model, inputs, importlib.import_module(case.module), hand)
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale)
    assert (got - plain).abs().max() > 1e-3 * scale and hand.todo == case.calls


def test_factor_one_installs_nothing_and_is_bit_identical(built):
    case, model = built
    inputs = case.small(model)
    before = processors(model)
    reference = run(model, inputs)
    handle = lib_todo.apply(model, TodoSettings(factor=1))
    assert not handle.installed and not dit_diffusers.has_todo(model)
    assert torch.equal(run(model, inputs), reference)
    assert handle.state.calls == 0 and handle.state.silence_reason() is None
    handle.remove()
    assert_nothing_left(case, model, before)


def test_remove_by_the_pipeline_leaves_nothing(built):
    case, model = built
    inputs = case.small(model)
    before = processors(model)
    reference = run(model, inputs)
    holder = types.SimpleNamespace(transformer=model)  # what a pipeline looks like to apply(): a .transformer
    handle = lib_todo.apply(holder, TodoSettings(factor=2))
    assert handle.unet is model and dit_diffusers.has_todo(model)
    assert not torch.equal(run(model, inputs), reference) and handle.state.calls == case.calls
    assert not dit.installed_anywhere()  # the kernel is ToDo's only while a forward runs
    assert lib_todo.remove(holder) == 2  # the pre-hook and the forward hook: nothing else is ever left in the model
    assert_nothing_left(case, model, before)
    handle.remove()  # after remove(model): nothing left to do, nothing broken
    assert torch.equal(run(model, inputs), reference)


def test_exception_mid_forward_leaves_nothing(built):
    case, model = built
    inputs = case.small(model)
    before = processors(model)
    reference = run(model, inputs)
    seen = []

    def fail(module, args):
        seen.append(dit.installed_anywhere())  # ToDo's kernel is in place mid-forward
        raise RuntimeError("interrupted")

    hook = case.failing_block(model).register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
                run(model, inputs)
    finally:
        hook.remove()
    assert seen == [True] and handle.state.calls == case.calls_before  # ToDo ran until the failure
    assert_nothing_left(case, model, before)
    assert torch.equal(run(model, inputs), reference)


def test_auto_is_off_below_native_size_and_acts_when_told_a_small_native_size(built):
    case, model = built
    inputs = case.below_native(model)
    reference = run(model, inputs)
    with lib_todo.patched(model, TodoSettings()) as handle:
        assert handle.installed
        assert torch.equal(run(model, inputs), reference)
    assert handle.state.calls == 0 and handle.state.silence_reason() is None
    assert not dit_diffusers.has_todo(model)
    with lib_todo.patched(model, TodoSettings(), native_px=case.native_px) as handle:
        assert not torch.equal(run(model, inputs), reference)
    assert handle.applied == {1: 2.0}


def test_step_window(built):
    case, model = built
    inputs = case.small(model)
    reference = run(model, inputs)
    with lib_todo.patched(model, TodoSettings(factor=2, start=0.5, stop=1.0)) as handle:
        assert torch.equal(run(model, inputs), reference)  # step 0: window not yet open
        assert handle.state.skipped == {"window": case.calls} and handle.state.calls == 0
        handle.set_progress(0.5)
        assert not torch.equal(run(model, inputs), reference)
        assert handle.state.calls == case.calls
