"""The DiT engine: ToDo inside a diffusion transformer's own attention calls, one model call at a time.

Every DiT host runs RoPE and then calls an attention kernel by a name it imported into its module globals:
Forge / Forge Neo / reForge call `attention_function` (reForge: `optimized_attention`), diffusers calls
`dispatch_attention_fn` (Lumina 2's processor calls `F.scaled_dot_product_attention`). A family (`DitFamily`)
says which modules scope which attention (`Role`: where the image grid sits among the keys, e.g. text first),
and what one model call holds (`DitCall`: the image token grid, the text length). For one model call,
`call_scope` hooks the scope modules, so that an attention call knows its role, and puts `HostAttention` in
place of the kernel name (the same object goes back after the call, also when it raises).

HostAttention hands a call in a role its keys/values with the image grid downsampled, to the host's own kernel:
the user's attention backend (SDPA, flash, Sage, xformers) keeps running. The balance bias rides in an extra
head channel (`lib_todo.balance`), or is left out where it is the same on every key. Every other call
(cross-attention, caption-only refiners, a call whose keys do not fit the role's layout) goes to the original,
untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..balance import with_bias_channel
from ..joint_attention import (
    ImageGrid,
    KeyLayout,
    add_key_bias,
    bias_is_uniform,
    downsample_keys,
    gather_keys,
    gather_mask,
    kept_mask,
    key_bias,
    on_device,
)
from ..layout import AttentionLayout
from ..state import EXTRA_TOKENS, OTHER_KERNEL, OWN_CONTEXT, PassState

BALANCES = ("channel", "mask", "off")  # the bias in a head channel (the host's kernel), in an SDPA mask, or none


@dataclass(frozen=True)
class DitCall:
    """What one model call feeds its attention: the target image's token grid, the text length, family facts.

    extra: whatever a family's roles need beyond these (per-item caption lengths, padding to a multiple).
    """

    grid: ImageGrid
    txt_len: int = 0
    extra: Any = None


Role = Callable[[DitCall, int], "KeyLayout | None"]  # (the call, the keys' length) -> where the image sits


def text_then_image(call: DitCall, length: int) -> KeyLayout | None:
    """[text, image, anything after it (reference images, padding)]: Flux, Qwen-Image, Krea 2."""
    return _fits(call.grid, call.txt_len, length)


def image_then_rest(call: DitCall, length: int) -> KeyLayout | None:
    """[image, anything after it (text, padding, reference frames)]: Neo's flipped Flux, Ernie-Image, Anima."""
    return _fits(call.grid, 0, length)


def image_only(call: DitCall, length: int) -> KeyLayout | None:
    """Exactly the image tokens: Wan's self-attention."""
    return _fits(call.grid, 0, length) if length == call.grid.n else None


def is_class_named(network: Any, *names: str) -> bool:
    """Whether `network` is a module whose class, or one of its bases, has one of `names`: recognised by name, so
    no host package is imported, and a subclass (a Nunchaku or VACE variant) is recognised too."""
    return isinstance(network, nn.Module) and any(c.__name__ in names for c in type(network).__mro__)


def forward_arguments(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A forward's arguments by name, the positional ones named from its signature (diffusers families read
    `img_ids`, masks and shapes from here, however the pipeline passed them)."""
    names = _FORWARD_PARAMETERS.get(type(network))
    if names is None:
        parameters = inspect.signature(type(network).forward).parameters
        names = _FORWARD_PARAMETERS[type(network)] = tuple(parameters)[1:]  # without self
    return {**dict(zip(names, args, strict=False)), **kwargs}


_FORWARD_PARAMETERS: dict[type, tuple[str, ...]] = {}


def _fits(grid: ImageGrid, start: int, length: int) -> KeyLayout | None:
    return KeyLayout(grid, start, length) if start + grid.n <= length else None


# How hosts call their attention kernel. Each request reads q, k, v as (B, heads, L, D) views, and calls the
# original again in the caller's own format with other keys/values (and mask, q, scale).


class ForgeRequest:
    """A call of Forge's / Neo's / reForge's attention function: (q, k, v, heads, mask=None, attn_precision=None,
    skip_reshape=False, skip_output_reshape=False, **kwargs) (Forge main has neither of the last two). Tensors
    are (B, heads, L, D) with skip_reshape, else (B, L, heads*D); the output is (B, L, heads*D), or
    (B, heads, L, D) with skip_output_reshape. The kernel uses 1/sqrt(head dim) and takes no scale."""

    NAMES = ("heads", "mask", "attn_precision", "skip_reshape", "skip_output_reshape")
    takes_scale = False
    scale = None

    def __init__(self, args: tuple, kwargs: dict[str, Any]) -> None:
        self.args, self.kwargs = args, kwargs
        named = dict(zip(("q", "k", "v", *self.NAMES), args, strict=False)) | kwargs
        self.heads = int(named["heads"])
        self.mask = named.get("mask")
        self.split = bool(named.get("skip_reshape", False))
        self.split_out = bool(named.get("skip_output_reshape", False))
        self.q, self.k, self.v = (self._to4(named[n]) for n in ("q", "k", "v"))

    def _to4(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.split else x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _from4(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.split else x.transpose(1, 2).flatten(2)

    def run(self, original: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale=None):
        args, kwargs = list(self.args), dict(self.kwargs)
        for i, x in enumerate((q, k, v)):
            args[i] = self._from4(x)
        if len(args) > 4:
            args[4] = mask
        elif "mask" in kwargs or mask is not None:
            kwargs["mask"] = mask
        return original(*args, **kwargs)

    def output(self, out4: torch.Tensor) -> torch.Tensor:
        """Our own (B, heads, L, D) result in the format the caller asked for."""
        return out4 if self.split_out else out4.transpose(1, 2).flatten(2)

    def narrow(self, out: torch.Tensor, d: int) -> torch.Tensor:
        """The kernel's output with the head dim cut back to `d`, in the caller's format."""
        if self.split_out:
            return out[..., :d]
        return out.unflatten(-1, (self.heads, -1))[..., :d].flatten(2)


class DispatchRequest:
    """A call of diffusers' `dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0,
    is_causal=False, scale=None, enable_gqa=False, return_lse=False, backend=None, parallel_config=None)`;
    tensors (B, L, heads, D), output (B, L, heads, D)."""

    NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa", "return_lse")
    takes_scale = True

    def __init__(self, args: tuple, kwargs: dict[str, Any]) -> None:
        named = dict(zip(self.NAMES, args, strict=False)) | kwargs
        self.named = named
        self.q, self.k, self.v = (named[n].transpose(1, 2) for n in ("query", "key", "value"))
        self.mask, self.scale = named.get("attn_mask"), named.get("scale")

    def unusual(self) -> bool:
        """Calls ToDo leaves to the host: causal, dropout, lse wanted, split across devices, grouped heads."""
        n = self.named
        return bool(
            n.get("is_causal") or n.get("return_lse") or n.get("parallel_config") is not None
            or n.get("dropout_p") or n.get("enable_gqa")
        )  # fmt: skip

    def run(self, original: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale=None):
        named = dict(self.named)
        named.update(query=q.transpose(1, 2), key=k.transpose(1, 2), value=v.transpose(1, 2), attn_mask=mask)
        if scale is not None:
            named["scale"] = scale
        return original(**named)

    def output(self, out4: torch.Tensor) -> torch.Tensor:
        return out4.transpose(1, 2)

    def narrow(self, out: torch.Tensor, d: int) -> torch.Tensor:
        return out[..., :d]


class SdpaRequest:
    """A call of `F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
    is_causal=False, scale=None, enable_gqa=False)`; tensors and output (B, heads, L, D)."""

    NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    takes_scale = True

    def __init__(self, args: tuple, kwargs: dict[str, Any]) -> None:
        named = dict(zip(self.NAMES, args, strict=False)) | kwargs
        self.named = named
        self.q, self.k, self.v = named["query"], named["key"], named["value"]
        self.mask, self.scale = named.get("attn_mask"), named.get("scale")

    def unusual(self) -> bool:
        n = self.named
        return bool(n.get("is_causal") or n.get("dropout_p") or n.get("enable_gqa"))

    def run(self, original: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale=None):
        named = dict(self.named)
        named.update(query=q, key=k, value=v, attn_mask=mask)
        if scale is not None:
            named["scale"] = scale
        return original(**named)

    def output(self, out4: torch.Tensor) -> torch.Tensor:
        return out4

    def narrow(self, out: torch.Tensor, d: int) -> torch.Tensor:
        return out[..., :d]


@dataclass(frozen=True)
class Convention:
    """How one host calls its attention kernel: the global names it calls it by, and how to read a call."""

    names: tuple[str, ...]
    request: type

    def slot(self, module: nn.Module) -> tuple[dict[str, Any], str] | None:
        """(module globals, name) that the attention code of `module` calls its kernel through, or None.

        diffusers: the globals of the module's processor class. Forge-style hosts: the globals of the module's
        class, or, where its code calls a module-level `attention()` helper defined elsewhere (Forge main's
        Chroma uses Flux's), that helper's globals: the name is looked up where the calling function lives.
        """
        processor = getattr(module, "processor", None)
        code = type(processor).__call__ if processor is not None else type(module).forward
        namespace = getattr(inspect.unwrap(code), "__globals__", None) if code is not None else None
        if namespace is None:
            return None
        helper = getattr(namespace.get("attention"), "__globals__", None)
        for candidate in (helper, namespace):
            for name in self.names if candidate is not None else ():
                if name in candidate:
                    return candidate, name
        return None


FORGE = Convention(("attention_function", "optimized_attention"), ForgeRequest)
DISPATCH = Convention(("dispatch_attention_fn",), DispatchRequest)


class _FunctionalWithTodo:
    """torch.nn.functional as seen by one attention module's code while ToDo runs: everything is torch's, but
    `scaled_dot_product_attention` is ToDo's (Lumina 2's diffusers processor calls `F.scaled_dot_product_attention`)."""

    def __init__(self, attention: Callable) -> None:
        self.scaled_dot_product_attention = attention

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)


class SdpaConvention(Convention):
    """A processor calling `F.scaled_dot_product_attention`: the name `F` is swapped for a functional namespace
    whose SDPA is ToDo's, and the original SDPA is what that one calls on."""


SDPA = SdpaConvention(("F",), SdpaRequest)


@dataclass(frozen=True)
class DitFamily:
    """One DiT family on one host.

    name: what users call it ("Flux", "Qwen-Image"). host: "forge" (Forge, Forge Neo, reForge: the network in
    the UNet patcher) or "diffusers". native_px: the side it was trained at; token_px: image pixels per token
    side (auto compares the token grid with native_px / token_px). recognise(network) -> bool.
    scopes(network) -> [(module, role)]: the modules whose forward scopes a role. read_call: forge:
    (latent x, conds dict) -> DitCall | None; diffusers: (args, kwargs of the transformer's forward) -> DitCall
    | None (None: ToDo sits the call out). convention: how its attention code calls the kernel.
    why_not(network) -> a reason when a recognised network cannot be served (fused kernels), else None.
    """

    name: str
    host: str
    native_px: int
    token_px: int
    recognise: Callable[[Any], bool]
    scopes: Callable[[nn.Module], list[tuple[nn.Module, Role]]]
    read_call: Callable[..., DitCall | None]
    convention: Convention = FORGE
    why_not: Callable[[Any], str | None] = field(default=lambda network: None)

    def layout(self, native_px: int | None = None) -> AttentionLayout:
        """The plan's view of the model: one level, the token grid itself (ds 1), the native side in tokens
        (`native_px` overrides the family's)."""
        return AttentionLayout((1,), max(1, (native_px or self.native_px) // self.token_px), "dit")


class ActiveCall:
    """One model call in progress: its DitCall, the pass state, and the role of the attention code now running."""

    def __init__(self, call: DitCall, state: PassState, balance: str) -> None:
        self.call = call
        self.state = state
        self.balance = balance
        self.roles: list[Role] = []
        self.seen_at_entry: list[int] = []  # per open scope: how many calls the state had counted when it opened

    def attend(self, request: Any, original: Callable) -> Any:
        """ToDo's output for this kernel call, or None to leave it to the original."""
        role = self.roles[-1]
        q, k = request.q, request.k
        if k.shape[2] != q.shape[2] or getattr(request, "unusual", lambda: False)():
            self.state.skip(OWN_CONTEXT)  # keys of another length (IP-Adapter's image tokens) or unusual options
            return None
        layout = role(self.call, int(k.shape[2]))
        if layout is None:
            self.state.skip(EXTRA_TOKENS)
            return None
        grid = layout.grid
        target = self.state.target(grid.h * grid.w, grid.hw)
        if target is None:
            return None
        method = self.state.settings.method
        k_small, v_small = downsample_keys(request.k, request.v, layout, target.factor, method)
        mask = kept_mask(request.mask, layout, target.factor, method)
        if self.balance == "off" or bias_is_uniform(layout, target.factor):
            return request.run(original, q, k_small, v_small, mask)
        if self.balance == "mask":
            bias = key_bias(layout, target.factor, q.device, q.dtype)
            full = add_key_bias(mask, bias, q.dtype)
            out = F.scaled_dot_product_attention(q, k_small, v_small, attn_mask=full, scale=request.scale)
            return request.output(out)
        bias = key_bias(layout, target.factor, q.device, torch.promote_types(q.dtype, torch.float32))
        qw, kw, vw, scale = with_bias_channel(q, k_small, v_small, bias, request.scale, request.takes_scale)
        out = request.run(original, qw, kw, vw, mask, scale if request.takes_scale else None)
        return request.narrow(out, q.shape[-1])


class BoundCall(ActiveCall):
    """The benchmark's bound: the image keys cost nothing. Each call in a role attends to the keys outside the
    image only (to one image key where there are none: Wan's video-only attention), through the host's kernel;
    no key/value reduction of the image can beat it."""

    def __init__(self, call: DitCall, state: PassState, balance: str = "off") -> None:
        super().__init__(call, state, "off")

    def attend(self, request: Any, original: Callable) -> Any:
        layout = self.roles[-1](self.call, int(request.k.shape[2]))
        if layout is None:
            return None
        index = on_device(("bound", layout), request.k.device, torch.long, _bound_index)
        k, v = (gather_keys(x, index) for x in (request.k, request.v))
        mask = None if request.mask is None else gather_mask(request.mask, index)
        return request.run(original, request.q, k, v, mask)


def _bound_index(key: tuple) -> torch.Tensor:
    _, layout = key
    starts = layout.start if layout.per_item else (layout.start,)
    rows = []
    for s in starts:
        outside = torch.cat([torch.arange(s), torch.arange(s + layout.grid.n, layout.length)])
        rows.append(outside if len(outside) else torch.tensor([s]))
    return torch.stack(rows) if layout.per_item else rows[0]


class HostAttention:
    """Stands in for a host's attention kernel during one model call: calls in a role get ToDo, others go to the
    original with their arguments untouched."""

    def __init__(self, active: ActiveCall, original: Callable, request: type) -> None:
        self.active = active
        self.original = original
        self.request = request

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.active.roles:
            return self.original(*args, **kwargs)
        try:
            request = self.request(args, kwargs)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError):  # a call shaped unlike the host's
            self.active.state.skip(OWN_CONTEXT)
            return self.original(*args, **kwargs)
        out = self.active.attend(request, self.original)
        return self.original(*args, **kwargs) if out is None else out


# Slots holding ToDo's attention right now, with what they held before: normally empty between model calls.
_REPLACED: dict[tuple[int, str], tuple[dict[str, Any], str, Any]] = {}


@dataclass(frozen=True)
class Installation:
    """What a family's network needs per model call: its scope modules with their roles, and the kernel slots."""

    family: DitFamily
    network: nn.Module
    scopes: tuple[tuple[nn.Module, Role], ...]
    slots: tuple[tuple[dict[str, Any], str], ...]


def installation(family: DitFamily, network: nn.Module, scopes: list | None = None) -> Installation:
    """The scopes (the family's, or those given: a block alone, for the bench) and kernel slots of `network`;
    TypeError naming what is missing when its attention cannot be found."""
    scopes = tuple(family.scopes(network) if scopes is None else scopes)
    if not scopes:
        raise TypeError(f"{type(network).__name__} has none of the {family.name} blocks ToDo knows")
    slots: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}
    for module, _ in scopes:
        found = family.convention.slot(module)
        if found is None:
            names = " or ".join(family.convention.names)
            raise TypeError(f"the attention code of {type(module).__name__} does not call {names} by a global name")
        slots[(id(found[0]), found[1])] = found
    return Installation(family, network, scopes, tuple(slots.values()))


@contextmanager
def call_scope(inst: Installation, active: ActiveCall) -> Iterator[ActiveCall]:
    """Within: the scope modules tell `active` their role, and each kernel slot holds HostAttention; all put
    back after, also when the block raises."""
    handles = []
    done: list[tuple[dict[str, Any], str, Any]] = []
    try:
        for module, role in inst.scopes:
            handles.append(module.register_forward_pre_hook(_enter(active, role)))
            handles.append(module.register_forward_hook(_leave(active), always_call=True))
        for namespace, name in inst.slots:
            original = namespace[name]
            _REPLACED.setdefault((id(namespace), name), (namespace, name, original))
            namespace[name] = _replacement(inst.family.convention, active, original)
            done.append((namespace, name, original))
        yield active
    finally:
        for handle in handles:
            handle.remove()
        for namespace, name, original in reversed(done):
            namespace[name] = original
            if _REPLACED.get((id(namespace), name), (None, None, None))[2] is original:
                del _REPLACED[(id(namespace), name)]


def _replacement(convention: Convention, active: ActiveCall, original: Any) -> Any:
    if isinstance(convention, SdpaConvention):  # `original` is the functional module; its SDPA is the kernel
        return _FunctionalWithTodo(HostAttention(active, original.scaled_dot_product_attention, SdpaRequest))
    return HostAttention(active, original, convention.request)


def _enter(active: ActiveCall, role: Role) -> Callable:
    def enter(module: nn.Module, args: tuple) -> None:
        active.roles.append(role)
        active.seen_at_entry.append(_seen(active.state))

    return enter


def _leave(active: ActiveCall) -> Callable:
    """Close the scope; one whose code never reached the kernel slot (every call that does ends counted, as
    downsampled or skipped) had its attention taken by another kernel (Neo's Radial Attention): say so."""

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        if active.roles:
            active.roles.pop()
        if active.seen_at_entry and active.seen_at_entry.pop() == _seen(active.state) and output is not None:
            active.state.skip(OTHER_KERNEL)

    return leave


def _seen(state: PassState) -> int:
    return state.calls + sum(state.skipped.values())


def restore_all() -> int:
    """Defensive (model switch, UI reload): put back any kernel still replaced; returns how many."""
    for namespace, name, original in _REPLACED.values():
        namespace[name] = original
    count = len(_REPLACED)
    _REPLACED.clear()
    return count


def installed_anywhere() -> bool:
    """Whether some slot holds ToDo's attention now (only ever true inside a model call)."""
    return bool(_REPLACED)
