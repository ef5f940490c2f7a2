"""PyTorch helpers: describe a model's architecture and watch its training signals.

:func:`describe_architecture` turns an ``nn.Module`` into the
``runwatch.v1.Architecture`` sent with a run's ``RunStart``.
:class:`ModelWatcher` hooks a model and, once per step, returns the per-layer
metrics runwatch's detectors read (``grad_norm/<layer>``,
``act/zero_frac/<layer>``, ``update_ratio/<layer>``, ...), ready for
``Run.log``.

Layer names are module paths as in ``model.named_modules()`` (``"net.0"``,
``"encoder.fc1"``); a model that is itself a single layer is named ``"model"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from runwatch.v1 import runs_pb2

__all__ = ["ModelWatcher", "describe_architecture"]

ROOT_NAME = "model"

#: Element-wise activation modules. One that directly consumes a layer's
#: output is reported as that layer's activation.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.GLU,
    nn.Softmax,
    nn.LogSoftmax,
)

#: Layers whose outputs the watcher records (after their activation when one follows).
#: Normalization layers are included because the activation usually follows them.
OUTPUT_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
    nn.RNNBase,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)

#: Modules with children that are still one layer (their children are internals).
_ATOMIC_TYPES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.RNNBase)

_SAT_TOL = 0.01

_LAYER_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES)


def _saturation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """Output bounds of a bounded activation, or None for unbounded ones."""
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return (-1.0, 1.0)
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return (0.0, 1.0)
    if isinstance(module, nn.Hardtanh):  # also ReLU6
        if isinstance(module, nn.ReLU6):
            return None  # its lower bound is ReLU's zero, counted by zero_frac
        return (float(module.min_val), float(module.max_val))
    return None


def _is_initialized(p: torch.Tensor) -> bool:
    return not isinstance(p, nn.parameter.UninitializedParameter)


def _numel(params: Iterator[torch.Tensor]) -> int:
    return sum(p.numel() for p in params if _is_initialized(p))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, torch.Size)):
        return "x".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _sizes(m: nn.Module) -> tuple[int, int]:
    """(in_size, out_size) of a layer; 0 where not applicable."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.Bilinear):
        return m.in1_features, m.out_features
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.RNNBase):
        out = m.proj_size if getattr(m, "proj_size", 0) else m.hidden_size
        return m.input_size, out * (2 if m.bidirectional else 1)
    if isinstance(m, nn.Embedding | nn.EmbeddingBag):
        return m.num_embeddings, m.embedding_dim
    if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm*, InstanceNorm*
        return m.num_features, m.num_features
    if isinstance(m, nn.GroupNorm):
        return m.num_channels, m.num_channels
    if isinstance(m, _LAYER_NORM_TYPES):
        n = math.prod(m.normalized_shape)
        return n, n
    if isinstance(m, nn.MultiheadAttention):
        return m.embed_dim, m.embed_dim
    return 0, 0


def _attributes(m: nn.Module) -> dict[str, str]:
    """Settings of a layer that matter for advice."""
    a: dict[str, Any] = {}
    if isinstance(m, nn.Linear | nn.Bilinear):
        a["bias"] = m.bias is not None
    elif isinstance(m, nn.modules.conv._ConvNd):
        a.update(
            kernel_size=m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
        )
    elif isinstance(m, nn.modules.dropout._DropoutNd):
        a["p"] = m.p
    elif isinstance(m, nn.RNNBase):
        a.update(num_layers=m.num_layers, bidirectional=m.bidirectional, dropout=m.dropout, batch_first=m.batch_first)
        if isinstance(m, nn.RNN):
            a["nonlinearity"] = m.nonlinearity
    elif isinstance(m, nn.modules.batchnorm._NormBase):
        a.update(eps=m.eps, momentum=m.momentum, affine=m.affine)
    elif isinstance(m, nn.LayerNorm):
        a.update(eps=m.eps, normalized_shape=m.normalized_shape)
    elif isinstance(m, nn.GroupNorm):
        a.update(num_groups=m.num_groups, eps=m.eps)
    elif isinstance(m, nn.MultiheadAttention):
        a.update(num_heads=m.num_heads, dropout=m.dropout)
    elif isinstance(m, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd):
        a.update(kernel_size=m.kernel_size, stride=m.stride)
    elif isinstance(m, nn.LeakyReLU):
        a["negative_slope"] = m.negative_slope
    elif isinstance(m, nn.ELU | nn.CELU):
        a["alpha"] = m.alpha
    params = [p for p in m.parameters() if _is_initialized(p)]
    if params and not any(p.requires_grad for p in params):
        a["frozen"] = True
    return {k: _fmt(v) for k, v in a.items()}


def _leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf (or atomic) modules in registration order, with their module paths."""
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, path: str) -> None:
        children = list(module.named_children())
        if not children or isinstance(module, _ATOMIC_TYPES):
            out.append((path or ROOT_NAME, module))
            return
        for name, child in children:
            walk(child, f"{path}.{name}" if path else name)

    walk(model, "")
    return out


@dataclass
class _Entry:
    name: str
    module: nn.Module
    activation: str = ""
    folded: list[nn.Module] = field(default_factory=list)


def _fold_static(model: nn.Module) -> list[_Entry]:
    """Fold activations that directly follow a layer inside an ``nn.Sequential``."""
    entries: list[_Entry] = []

    # tail(m): the entry whose output is m's output, when knowable without running m.
    def walk(module: nn.Module, path: str) -> _Entry | None:
        children = list(module.named_children())
        if not children or isinstance(module, _ATOMIC_TYPES):
            entry = _Entry(path or ROOT_NAME, module)
            entries.append(entry)
            return entry
        sequential = isinstance(module, nn.Sequential)
        tail: _Entry | None = None
        for name, child in children:
            host = tail
            if (
                sequential
                and host is not None
                and _is_activation(child)
                and not child._modules
                and not host.activation
                and not _is_activation(host.module)
            ):
                host.activation = type(child).__name__
                host.folded.append(child)
                continue  # host stays the tail: its output is now post-activation
            tail = walk(child, f"{path}.{name}" if path else name)
        return tail if sequential else None

    walk(model, "")
    return entries


def _fold_traced(model: nn.Module, example_input: Any) -> list[_Entry]:
    """Order layers by a real forward pass and fold activations that consume a layer's output."""
    leaves = _leaf_layers(model)
    calls: list[tuple[str, nn.Module, Any, Any]] = []
    handles = []
    for name, module in leaves:

        def hook(mod: nn.Module, args: tuple, output: Any, _name: str = name) -> None:
            calls.append((_name, mod, args[0] if args else None, output))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example_input, tuple):
                model(*example_input)
            elif isinstance(example_input, dict):
                model(**example_input)
            else:
                model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    entries: dict[str, _Entry] = {}
    ordered: list[_Entry] = []
    folded: set[str] = set()
    last: tuple[_Entry, Any] | None = None
    for name, mod, inp, output in calls:
        if (
            _is_activation(mod)
            and last is not None
            and inp is last[1]
            and not last[0].activation
            and not _is_activation(last[0].module)
        ):
            last[0].activation = type(mod).__name__
            last[0].folded.append(mod)
            folded.add(name)
            last = (last[0], output)
            continue
        if name in folded:  # a shared activation module, here not fed by a layer
            last = None
            continue
        entry = entries.get(name)
        if entry is None:
            entry = entries[name] = _Entry(name, mod)
            ordered.append(entry)
        last = (entry, output)
    for name, module in leaves:  # modules the forward never called
        if name not in entries and name not in folded:
            ordered.append(_Entry(name, module))
    return ordered


def describe_architecture(model: nn.Module, example_input: Any = None) -> runs_pb2.Architecture:
    """Describe ``model`` as an ordered list of layers.

    Layers are the model's leaf modules (plus RNNs and attention blocks, kept
    whole). An element-wise activation module (``nn.ReLU``, ``nn.Tanh``,
    ``nn.GELU``, ...) that consumes a layer's output becomes that layer's
    ``activation`` instead of a layer of its own. Without ``example_input``
    this is detected inside ``nn.Sequential`` containers, and layers follow
    registration order; with it, one forward pass (in eval mode, without
    gradients) gives the true forward order and finds activations in custom
    modules too. Functional activations (``F.relu``) are invisible either way.

    Parameters
    ----------
    model
        The model.
    example_input
        Optional input for a tracing forward pass: a tensor, a tuple of
        positional arguments or a dict of keyword arguments.

    Returns
    -------
    runs_pb2.Architecture
        Layers in forward order and the model's trainable parameter count.

    Examples
    --------
    >>> from torch import nn
    >>> arch = describe_architecture(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2)))
    >>> [(l.name, l.type, l.in_size, l.out_size, l.activation) for l in arch.layers]
    [('0', 'Linear', 4, 8, 'ReLU'), ('2', 'Dropout', 0, 0, ''), ('3', 'Linear', 8, 2, '')]
    >>> arch.layers[1].attributes["p"], arch.total_params
    ('0.1', 58)
    """
    entries = _fold_static(model) if example_input is None else _fold_traced(model, example_input)
    arch = runs_pb2.Architecture()
    for e in entries:
        in_size, out_size = _sizes(e.module)
        attrs = _attributes(e.module)
        for act in e.folded:
            for k, v in _attributes(act).items():
                attrs.setdefault(f"activation_{k}", v)
        arch.layers.add(
            name=e.name,
            type=type(e.module).__name__,
            in_size=in_size,
            out_size=out_size,
            activation=e.activation,
            param_count=_numel(e.module.parameters()) + sum(_numel(a.parameters()) for a in e.folded),
            attributes=attrs,
        )
    arch.total_params = _numel(p for p in model.parameters() if p.requires_grad)
    return arch


class _ActStats:
    """Running mean/M2 (Chan et al.) plus zero and saturation counts; tensors stay on device."""

    __slots__ = ("n", "mean", "m2", "zeros", "sat", "bounded")

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.zeros: torch.Tensor | None = None
        self.sat: torch.Tensor | None = None
        self.bounded = False

    def add(self, y: torch.Tensor, bounds: tuple[float, float] | None) -> None:
        y = y.detach()
        n = y.numel()
        if n == 0:
            return
        y = y.float()
        var, mean = torch.var_mean(y, correction=0)
        m2 = var * n
        zeros = (y == 0).sum()
        if bounds is not None:
            lo, hi = bounds
            sat = ((y <= lo + _SAT_TOL) | (y >= hi - _SAT_TOL)).sum()
            self.bounded = True
        else:
            sat = zeros.new_zeros(())
        if self.mean is None:
            self.n, self.mean, self.m2, self.zeros, self.sat = n, mean, m2, zeros, sat
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.n * n / total)
        self.zeros = self.zeros + zeros
        self.sat = self.sat + sat
        self.n = total


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, nn.utils.rnn.PackedSequence):
        return output.data
    if isinstance(output, (tuple, list)) and output:
        return _first_tensor(output[0])
    return None


class ModelWatcher:
    """Per-layer activation, gradient and weight statistics of a model, as metrics.

    Forward hooks on ``Linear``/``Conv``/``RNN``/normalization layers and on activation
    modules record activation statistics of each layer's *post-activation*
    output: when an activation module consumes a layer's output, the
    statistics are those of the activation's output, filed under the layer's
    name; otherwise the layer's raw output is used (and an activation module
    fed by something else is filed under its own name). Call :meth:`stats`
    once per training step, after ``backward()`` and before
    ``optimizer.zero_grad()``.

    Every ``every`` steps (the first :meth:`stats` call included), it returns:

    - ``grad_norm``: global L2 norm of all gradients;
    - ``grad_norm/<layer>``, ``weight_norm/<layer>``: L2 norms over the
      layer's parameters (weights and biases);
    - ``update_ratio/<layer>``: ``||w - w_prev|| / ||w||`` where ``w_prev`` is
      the snapshot taken at the previous collection (absent on the first);
    - ``act/mean/<layer>``, ``act/std/<layer>``, ``act/zero_frac/<layer>``
      and, after tanh/sigmoid-like activations, ``act/sat_frac/<layer>``
      (fraction within 0.01 of the bounds), pooled over the step's training
      forward passes.

    On other steps the hooks return at once and :meth:`stats` returns only
    ``grad_norm`` (one fused norm; set ``always_grad_norm=False`` to skip it
    too). Forward passes in eval mode are ignored, so validation does not
    pollute training statistics. Values may be NaN or Inf: that is signal.

    Parameters
    ----------
    model
        The model to watch.
    every
        Collect the full statistics every this many steps.
    always_grad_norm
        Return the global ``grad_norm`` on every step.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    >>> watcher = ModelWatcher(model)
    >>> model(torch.randn(16, 4)).pow(2).mean().backward()
    >>> m = watcher.stats()
    >>> sorted(k for k in m if k.endswith("/0"))  # doctest: +NORMALIZE_WHITESPACE
    ['act/mean/0', 'act/std/0', 'act/zero_frac/0', 'grad_norm/0', 'weight_norm/0']
    >>> 0.0 <= m["act/zero_frac/0"] <= 1.0
    True
    >>> watcher.close()
    """

    def __init__(self, model: nn.Module, every: int = 1, *, always_grad_norm: bool = True) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model = model
        self.every = int(every)
        self.always_grad_norm = always_grad_norm
        self._calls = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # id(raw output tensor) -> (layer name, the tensor); kept until an activation
        # consumes it or the forward pass ends.
        self._pending: dict[int, tuple[str, torch.Tensor]] = {}
        self._acts: dict[str, _ActStats] = {}
        self._snapshot: dict[str, list[torch.Tensor]] = {}

        self._layer_params: dict[str, list[nn.Parameter]] = {}
        for name, module in _leaf_layers(model):
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                self._layer_params[name] = params
            if isinstance(module, OUTPUT_LAYER_TYPES):
                self._handles.append(module.register_forward_hook(self._layer_hook(name)))
            elif _is_activation(module):
                self._handles.append(module.register_forward_hook(self._activation_hook(name, module)))
        if not isinstance(model, OUTPUT_LAYER_TYPES) and not _is_activation(model):
            self._handles.append(model.register_forward_hook(self._end_of_forward))

    # -- hooks -------------------------------------------------------------

    @property
    def collecting(self) -> bool:
        """Whether the current step (the next :meth:`stats` call) collects full statistics."""
        return self._calls % self.every == 0

    def _recording(self) -> bool:
        return self.model.training and self._calls % self.every == 0

    def _layer_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._recording():
                return
            y = _first_tensor(output)
            if y is not None and y.is_floating_point():
                self._pending[id(y)] = (name, y)

        return hook

    def _activation_hook(self, name: str, module: nn.Module):
        bounds = _saturation_bounds(module)

        def hook(mod: nn.Module, args: tuple, output: Any) -> None:
            if not self._recording() or not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            x = args[0] if args else None
            entry = self._pending.pop(id(x), None) if x is not None else None
            # `is` guards against a recycled id(); in-place activations return their input.
            owner = entry[0] if entry is not None and entry[1] is x else name
            self._acts.setdefault(owner, _ActStats()).add(output, bounds)

        return hook

    def _end_of_forward(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._flush_pending()

    def _flush_pending(self) -> None:
        for name, y in self._pending.values():
            self._acts.setdefault(name, _ActStats()).add(y, None)
        self._pending.clear()

    # -- collection --------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Metrics for the current step; advances the step counter.

        Returns
        -------
        dict[str, float]
            Metric name to value (see the class docstring); only ``grad_norm``
            (or nothing) on steps that do not collect.
        """
        collect = self.collecting
        self._calls += 1
        if not collect:
            self._pending.clear()
            if not self.always_grad_norm:
                return {}
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if not grads:
                return {}
            return {"grad_norm": float(_global_norm(_norms(grads)))}

        self._flush_pending()
        names: list[str] = []
        values: list[torch.Tensor] = []

        def put(name: str, value: torch.Tensor) -> None:
            names.append(name)
            values.append(value.detach().to(_wide(value.device)).reshape(()))

        all_grad_norms: list[torch.Tensor] = []
        for layer, params in self._layer_params.items():
            params = [p for p in params if _is_initialized(p)]
            if not params:
                continue
            data = [p.detach() for p in params]
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms = _norms(grads)
                all_grad_norms.extend(norms)
                put(f"grad_norm/{layer}", _global_norm(norms))
            w_norm = _global_norm(_norms(data))
            put(f"weight_norm/{layer}", w_norm)
            prev = self._snapshot.get(layer)
            if prev is not None and len(prev) == len(data) and all(a.shape == b.shape for a, b in zip(prev, data)):
                delta = _global_norm(_norms(list(torch._foreach_sub(data, prev))))
                put(f"update_ratio/{layer}", delta / w_norm.clamp_min(torch.finfo(w_norm.dtype).tiny))
                torch._foreach_copy_(prev, data)
            else:
                self._snapshot[layer] = [d.clone() for d in data]
        # Parameters outside any leaf layer (e.g. a bare nn.Parameter on a custom module).
        seen = {id(p) for ps in self._layer_params.values() for p in ps}
        extra = [p.grad for p in self.model.parameters() if p.grad is not None and id(p) not in seen]
        if extra:
            all_grad_norms.extend(_norms(extra))
        if all_grad_norms:
            put("grad_norm", _global_norm([n.to(all_grad_norms[0].device) for n in all_grad_norms]))

        for layer, acc in self._acts.items():
            if acc.mean is None:
                continue
            put(f"act/mean/{layer}", acc.mean)
            put(f"act/std/{layer}", (acc.m2 / acc.n).clamp_min(0).sqrt())
            put(f"act/zero_frac/{layer}", acc.zeros / acc.n)
            if acc.bounded:
                put(f"act/sat_frac/{layer}", acc.sat / acc.n)
        self._acts.clear()

        if not values:
            return {}
        device = values[0].device  # one stack and one transfer instead of a sync per value
        return dict(zip(names, torch.stack([v.to(device) for v in values]).tolist()))

    # -- lifecycle ---------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Names of the layers whose parameters are watched."""
        return list(self._layer_params)

    def close(self) -> None:
        """Remove the hooks and drop the weight snapshots."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pending.clear()
        self._acts.clear()
        self._snapshot.clear()

    def __enter__(self) -> "ModelWatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wide(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-tensor L2 norms, accumulated in float64 so finite float32 values give a finite norm."""
    return list(torch._foreach_norm(tensors, 2, dtype=_wide(tensors[0].device)))


def _global_norm(norms: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    if len(norms) == 1:
        return norms[0]
    return torch.linalg.vector_norm(torch.stack(list(norms)))
