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

import functools
import logging
import math
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from runwatch.v1 import runs_pb2

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "FirstForwardRecording",
    "ModelWatcher",
    "describe_architecture",
    "describe_first_forward",
    "grad_norm",
    "registration_order_is_forward_order",
]

logger = logging.getLogger("runwatch.client")

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

    def fold(self, activation: nn.Module) -> None:
        """Make ``activation`` (which consumes this layer's output) the layer's activation."""
        self.activation = type(activation).__name__
        self.folded.append(activation)


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
                host.fold(child)
                continue  # host stays the tail: its output is now post-activation
            tail = walk(child, f"{path}.{name}" if path else name)
        return tail if sequential else None

    walk(model, "")
    return entries


def _activation_functions() -> dict[Any, type[nn.Module]]:
    """Functional activations, each mapped to the module class it is named after."""
    by_module: dict[type[nn.Module], tuple[Any, ...]] = {
        nn.ReLU: (F.relu, F.relu_, torch.relu, torch.Tensor.relu, torch.Tensor.relu_),
        nn.ReLU6: (F.relu6,),
        nn.LeakyReLU: (F.leaky_relu, F.leaky_relu_),
        nn.ELU: (F.elu, F.elu_),
        nn.SELU: (F.selu, torch.selu),
        nn.CELU: (F.celu,),
        nn.GELU: (F.gelu,),
        nn.SiLU: (F.silu,),
        nn.Mish: (F.mish,),
        nn.Softplus: (F.softplus,),
        nn.Tanh: (torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_),
        nn.Sigmoid: (torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_),
        nn.Hardtanh: (F.hardtanh, F.hardtanh_),
        nn.Hardsigmoid: (F.hardsigmoid,),
        nn.Hardswish: (F.hardswish,),
        nn.LogSigmoid: (F.logsigmoid,),
        nn.Softsign: (F.softsign,),
    }
    return {function: module_type for module_type, functions in by_module.items() for function in functions}


#: What a tracing forward pass recognises as a functional activation (``F.tanh`` and
#: ``F.sigmoid`` arrive as the Tensor methods they call).
ACTIVATION_FUNCTIONS: dict[Any, type[nn.Module]] = _activation_functions()


def _activation_type(func: Any) -> type[nn.Module] | None:
    try:
        return ACTIVATION_FUNCTIONS.get(func)
    except TypeError:  # an unhashable callable
        return None


def _activation_module(module_type: type[nn.Module], args: tuple, kwargs: dict[str, Any]) -> nn.Module:
    """The module equivalent to a functional activation call, for its attributes (``F.leaky_relu(x, 0.2)``).

    The functions take the module's constructor arguments after the input.
    """
    try:
        return module_type(*args[1:], **{k: v for k, v in kwargs.items() if k != "input"})
    except (TypeError, ValueError):
        return module_type()


class _ForwardTrace:
    """What one forward pass did: layers in call order, each activation folded into the layer whose output it consumes.

    Layer outputs are matched by identity and held by weak reference only, so
    the pass frees its tensors as it would without the trace.
    """

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}  # by module path, in first-call order
        self.folded_modules: set[str] = set()
        self.layers_running = 0  # functions called inside a layer are the layer's internals
        self._layer_outputs: dict[int, tuple[weakref.ref, _Entry]] = {}

    def layer_called(self, name: str, module: nn.Module, inp: Any, output: Any) -> None:
        if _is_activation(module):
            producer = self._producer_of(inp)
            if producer is not None:
                producer.fold(module)
                self.folded_modules.add(name)
                return
        entry = self.entries.setdefault(name, _Entry(name, module))
        if isinstance(output, torch.Tensor) and not _is_activation(module):
            self._layer_outputs[id(output)] = (weakref.ref(output), entry)

    def function_called(self, module_type: type[nn.Module], args: tuple, kwargs: dict[str, Any]) -> None:
        if self.layers_running:
            return
        producer = self._producer_of(args[0] if args else kwargs.get("input"))
        if producer is not None:
            producer.fold(_activation_module(module_type, args, kwargs))

    def _producer_of(self, tensor: Any) -> _Entry | None:
        """The layer whose output ``tensor`` is, when that layer has no activation yet."""
        if not isinstance(tensor, torch.Tensor):
            return None
        found = self._layer_outputs.get(id(tensor))
        if found is None or found[0]() is not tensor or found[1].activation:
            return None
        return found[1]

    def layers(self, leaves: list[tuple[str, nn.Module]]) -> list[_Entry]:
        """The layers in call order, then those the pass never called in registration order.

        An activation module folded into some layer is no layer of its own,
        even where another call of it was fed by something else.
        """
        called = [e for name, e in self.entries.items() if name not in self.folded_modules]
        skipped = [_Entry(n, m) for n, m in leaves if n not in self.entries and n not in self.folded_modules]
        return called + skipped


class _ActivationFunctionMode(TorchFunctionMode):
    """Reports each functional activation call to ``on_activation``; every function runs unchanged."""

    def __init__(self, on_activation: Callable[[type[nn.Module], tuple, dict[str, Any]], None]) -> None:
        super().__init__()
        self._on_activation = on_activation

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        module_type = _activation_type(func)
        if module_type is not None:
            self._on_activation(module_type, args, kwargs)
        return output


def _whole_model_modules(model: nn.Module) -> list[nn.Module]:
    """The model, then each single child holding all of the previous one's parameters.

    Calling any of them runs every layer of the model: a Lightning module's
    ``training_step`` may call ``self.net(x)`` instead of ``self(x)``.
    """
    chain = [model]
    params = {id(p) for p in model.parameters()}
    while params:
        holders = [c for c in chain[-1].children() if {id(p) for p in c.parameters()} == params]
        if len(holders) != 1:
            break
        chain.append(holders[0])
    return chain


class FirstForwardRecording:
    """Describes a model from its next complete forward pass, then removes every hook it placed.

    Made by :func:`describe_first_forward`. Until that pass only the model
    (and a child holding all its parameters) carry a pre-hook and a hook; the
    pass itself runs with hooks on every layer and a ``TorchFunctionMode``
    that sees functional activations. Nothing is changed: outputs, gradients,
    random numbers and training mode are the pass's own. A pass that raises
    is not used (the next one is). Errors of the recording itself are logged
    and end it; they never reach the training loop.
    """

    def __init__(self, model: nn.Module, on_architecture: Callable[[runs_pb2.Architecture], Any]) -> None:
        self.model = model
        #: Whether the architecture was handed to ``on_architecture``.
        self.done = False
        self._on_architecture = on_architecture
        self._trace: _ForwardTrace | None = None
        self._mode: _ActivationFunctionMode | None = None
        self._starter: nn.Module | None = None
        self._thread = 0
        self._failed = False
        self._layer_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for module in _whole_model_modules(model):
            self._handles.append(module.register_forward_pre_hook(self._safely(self._start), prepend=True))
            self._handles.append(module.register_forward_hook(self._safely(self._finish), always_call=True))

    @property
    def pending(self) -> bool:
        """Whether the hooks still wait for a forward pass."""
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook now (idempotent); the architecture is then never described."""
        self._end_trace()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _safely(self, hook: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                hook(*args)
            except Exception:
                logger.exception("runwatch: recording the model's architecture from its forward pass failed")
                self.remove()

        return guarded

    def _tracing(self) -> bool:
        return self._trace is not None and not self._failed and threading.get_ident() == self._thread

    def _start(self, module: nn.Module, args: tuple) -> None:
        if self._trace is not None or not self._handles:
            return
        self._trace = _ForwardTrace()
        self._starter = module
        self._thread = threading.get_ident()
        for name, layer in _leaf_layers(self.model):
            self._layer_handles.append(layer.register_forward_pre_hook(self._safely(self._enter_layer)))
            hook = self._safely(functools.partial(self._leave_layer, name))
            self._layer_handles.append(layer.register_forward_hook(hook, with_kwargs=True, always_call=True))
        self._mode = _ActivationFunctionMode(self._function_called)
        self._mode.__enter__()

    def _enter_layer(self, module: nn.Module, args: tuple) -> None:
        if self._tracing():
            self._trace.layers_running += 1

    def _leave_layer(self, name: str, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if not self._tracing():
            return
        self._trace.layers_running = max(self._trace.layers_running - 1, 0)
        self._trace.layer_called(name, module, args[0] if args else next(iter(kwargs.values()), None), output)

    def _function_called(self, module_type: type[nn.Module], args: tuple, kwargs: dict[str, Any]) -> None:
        # Runs inside the mode's handler, where the mode is off the stack: failures end the recording at _finish.
        try:
            if self._tracing():
                self._trace.function_called(module_type, args, kwargs)
        except Exception:
            logger.exception("runwatch: recording the model's architecture from its forward pass failed")
            self._failed = True

    def _finish(self, module: nn.Module, args: tuple, output: Any) -> None:
        if module is not self._starter or self._trace is None or threading.get_ident() != self._thread:
            return
        trace = self._end_trace()
        if self._failed:
            self.remove()
            return
        if sys.exc_info()[0] is not None:  # called for a forward that raised: wait for the next one
            return
        self.remove()
        self.done = True
        self._on_architecture(_architecture_of(self.model, trace.layers(_leaf_layers(self.model))))

    def _end_trace(self) -> _ForwardTrace | None:
        trace, self._trace, self._starter = self._trace, None, None
        if self._mode is not None:
            if torch.overrides._get_current_function_mode() is self._mode:
                self._mode.__exit__(None, None, None)
            else:  # the forward left a mode of its own on top: ours stays below it, inert without a trace
                logger.warning("runwatch: a torch function mode entered in the forward pass is still active")
            self._mode = None
        for handle in self._layer_handles:
            handle.remove()
        self._layer_handles = []
        return trace


def describe_first_forward(
    model: nn.Module, on_architecture: Callable[[runs_pb2.Architecture], Any]
) -> FirstForwardRecording:
    """Call ``on_architecture`` with the architecture of ``model``'s next forward pass, as the training loop runs it.

    No extra forward pass is run and nothing about the pass changes (see
    :class:`FirstForwardRecording`); the result is what
    :func:`describe_architecture` gives with that pass's input as
    ``example_input``, except that the pass keeps its own training mode and
    gradients. This is how the SDK describes a model it was given without an
    example input.

    Examples
    --------
    >>> import torch.nn.functional as F
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         return self.fc2(F.relu(self.fc1(x)))
    >>> model, seen = Net(), []
    >>> recording = describe_first_forward(model, seen.append)
    >>> _ = model(torch.randn(3, 4))
    >>> [(l.name, l.activation) for l in seen[0].layers], recording.pending
    ([('fc1', 'ReLU'), ('fc2', '')], False)
    """
    return FirstForwardRecording(model, on_architecture)


def registration_order_is_forward_order(model: nn.Module) -> bool:
    """Whether describing ``model`` without a forward pass is exact: it nests only plain ``nn.Sequential``.

    Inside a layer (a leaf module, an RNN, attention) nothing is described
    either way, so only the containers matter.

    Examples
    --------
    >>> registration_order_is_forward_order(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    True
    >>> registration_order_is_forward_order(nn.TransformerEncoderLayer(8, 2))
    False
    """
    if not model._modules or isinstance(model, _ATOMIC_TYPES):
        return True
    return (
        isinstance(model, nn.Sequential)
        and type(model).forward is nn.Sequential.forward
        and all(registration_order_is_forward_order(child) for child in model.children())
    )


def _call(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, tuple):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)


def _traced_architecture(model: nn.Module, example_input: Any) -> runs_pb2.Architecture:
    """The architecture seen by one forward pass on ``example_input``, in eval mode and without gradients."""
    described: list[runs_pb2.Architecture] = []
    recording = FirstForwardRecording(model, described.append)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            _call(model, example_input)
    finally:
        model.train(was_training)
        recording.remove()
    if not described:
        raise RuntimeError("tracing the forward pass failed (see the log)")
    return described[0]


def _architecture_of(model: nn.Module, entries: list[_Entry]) -> runs_pb2.Architecture:
    arch = runs_pb2.Architecture()
    counted: set[int] = set()  # an activation module folded into several layers counts its parameters once
    for e in entries:
        in_size, out_size = _sizes(e.module)
        attrs = _attributes(e.module)
        params = _numel(e.module.parameters())
        for act in e.folded:
            for k, v in _attributes(act).items():
                attrs.setdefault(f"activation_{k}", v)
            if id(act) not in counted:
                counted.add(id(act))
                params += _numel(act.parameters())
        arch.layers.add(
            name=e.name,
            type=type(e.module).__name__,
            in_size=in_size,
            out_size=out_size,
            activation=e.activation,
            param_count=params,
            attributes=attrs,
        )
    arch.total_params = _numel(p for p in model.parameters() if p.requires_grad)
    return arch


def describe_architecture(model: nn.Module, example_input: Any = None) -> runs_pb2.Architecture:
    """Describe ``model`` as an ordered list of layers.

    Layers are the model's leaf modules (plus RNNs and attention blocks, kept
    whole). An element-wise activation that consumes a layer's output becomes
    that layer's ``activation`` instead of a layer of its own.

    With ``example_input``, one forward pass (in eval mode, without
    gradients) gives the true forward order and finds every activation that
    consumes a layer's output: modules (a shared ``self.act`` is folded into
    each layer it follows) and functional calls (``F.relu``, ``torch.tanh``,
    ``x.sigmoid()``, ``F.gelu``, ... named like their module: ``ReLU``,
    ``Tanh``, ``GELU``; see ``ACTIVATION_FUNCTIONS``), such as the one
    inside ``nn.TransformerEncoderLayer``. Without it, layers follow
    registration order and activations are folded only inside
    ``nn.Sequential``: exact for models made of ``nn.Sequential`` alone (see
    :func:`registration_order_is_forward_order`), a guess for others. To
    describe a model from the training loop's own first forward pass instead,
    use :func:`describe_first_forward` (the SDK does).

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

    A custom module that reuses one activation module after every layer:

    >>> class MLP(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.hidden = nn.ModuleList([nn.Linear(4, 8), nn.Linear(8, 8)])
    ...         self.act = nn.Tanh()
    ...         self.head = nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         for layer in self.hidden:
    ...             x = self.act(layer(x))
    ...         return self.head(x)
    >>> arch = describe_architecture(MLP(), example_input=torch.randn(1, 4))
    >>> [(l.name, l.activation) for l in arch.layers]
    [('hidden.0', 'Tanh'), ('hidden.1', 'Tanh'), ('head', '')]
    """
    if example_input is None:
        return _architecture_of(model, _fold_static(model))
    return _traced_architecture(model, example_input)


class _ActStats:
    """One layer's activation statistics for one step: per forward pass, scalars that stay on the device.

    Per pass: the mean and the spread (on a GPU the variance from one fused
    ``torch.var_mean`` kernel; on the CPU the sum of squared deviations, two
    passes that are ~10x faster there than ``var_mean``), the count of zeros
    and, after bounded activations, of saturated values. Nothing is combined
    on the device: :meth:`tensors` hands the scalars to the watcher's one
    transfer, and :meth:`combine` pools the passes on the host in float64
    (Chan et al.'s parallel variance). On a GPU every kernel launch costs
    CPU time in the training loop, so each pass launches as few as it can.

    Examples
    --------
    >>> acts = _ActStats()
    >>> acts.add(torch.tensor([0.0, 1.0, 2.0, 3.0]), None)
    >>> acts.add(torch.tensor([4.0, 0.0]), None)
    >>> floats, counts = acts.tensors()
    >>> mean, std, zero_frac, _ = acts.combine([float(t) for t in floats], [float(t) for t in counts])
    >>> round(mean, 4), round(std, 4), zero_frac
    (1.6667, 1.4907, 0.3333333333333333)
    """

    __slots__ = ("bounded", "passes")

    def __init__(self) -> None:
        self.passes: list[tuple[int, bool, tuple[torch.Tensor, ...]]] = []  # (n, spread is a variance, scalars)
        self.bounded = False

    def add(self, y: torch.Tensor, bounds: tuple[float, float] | None) -> None:
        y = y.detach()
        n = y.numel()
        if n == 0:
            return
        if y.dtype not in (torch.float32, torch.float64):
            y = y.float()
        is_variance = y.device.type != "cpu"
        if is_variance:  # 3 kernels with the zero count
            spread, mean = torch.var_mean(y, correction=0)
            zeros = (y == 0).sum()
        else:
            mean = y.mean()
            spread = torch.linalg.vector_norm(y - mean).square()
            zeros = n - y.bool().sum()  # 2x faster than (y == 0).sum() on the CPU
        # NaN counts as non-zero either way, as in count_nonzero
        scalars: tuple[torch.Tensor, ...] = (mean, spread, zeros)
        if bounds is not None:
            lo, hi = bounds
            center, half = (lo + hi) / 2.0, (hi - lo) / 2.0
            dist = y.abs() if center == 0.0 else (y - center).abs()
            scalars += ((dist >= half - _SAT_TOL).sum(),)  # within _SAT_TOL of either bound
            self.bounded = True
        self.passes.append((n, is_variance, scalars))

    def tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The passes' scalars as 1-element views (no kernel): ``(means and spreads, counts)``, in pass order.

        Floats and counts apart, so that each group is one ``cat`` of one dtype (a mixed ``cat`` converts
        every input with a kernel of its own).
        """
        floats = [t.reshape(1) for _, _, scalars in self.passes for t in scalars[:2]]
        counts = [t.reshape(1) for _, _, scalars in self.passes for t in scalars[2:]]
        return floats, counts

    def combine(self, floats: list[float], counts: list[float]) -> tuple[float, float, float, float]:
        """``(mean, std, zero fraction, saturated fraction)`` over every pass, from :meth:`tensors`' values."""
        n_all, mean_all, m2_all, zeros_all, sat_all = 0, 0.0, 0.0, 0.0, 0.0
        i = j = 0
        for n, is_variance, scalars in self.passes:
            mean, spread = floats[i : i + 2]
            zeros = counts[j]
            sat = counts[j + 1] if len(scalars) == 4 else 0.0
            i, j = i + 2, j + len(scalars) - 2
            m2 = spread * n if is_variance else spread
            if n_all == 0:
                n_all, mean_all, m2_all = n, mean, m2
            else:
                total = n_all + n
                delta = mean - mean_all
                mean_all += delta * (n / total)
                m2_all += m2 + delta * delta * (n_all * n / total)
                n_all = total
            zeros_all += zeros
            sat_all += sat
        std = math.sqrt(max(m2_all / n_all, 0.0)) if math.isfinite(m2_all) else m2_all
        return mean_all, std, zeros_all / n_all, sat_all / n_all


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

    Gradient norms are those of the gradients present when :meth:`stats` is
    called. A loop that clips them before that call (the Hugging Face
    ``Trainer`` calls its callbacks' ``on_pre_optimizer_step`` after
    clipping) passes ``grads_at_backward=True``: on collecting steps each
    parameter's gradient norm is then taken as its gradient is complete,
    during ``backward()`` (torch's post-accumulate-grad hooks; with gradient
    accumulation the last backward's, i.e. the accumulated gradient), so
    ``grad_norm`` and ``grad_norm/<layer>`` are the norms before clipping.

    Parameters
    ----------
    model
        The model to watch.
    every
        Collect the full statistics every this many steps.
    always_grad_norm
        Return the global ``grad_norm`` on every step.
    grads_at_backward
        Take the collecting steps' gradient norms during ``backward()``, before
        the loop can clip them (see above).

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

    def __init__(
        self, model: nn.Module, every: int = 1, *, always_grad_norm: bool = True, grads_at_backward: bool = False
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model = model
        self.every = int(every)
        self.always_grad_norm = always_grad_norm
        self.grads_at_backward = grads_at_backward
        self._calls = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # id(parameter) -> the norm of its gradient when backward() completed it (grads_at_backward)
        self._backward_norms: dict[int, torch.Tensor] = {}
        # id(raw output tensor) -> (layer name, the tensor); kept until an activation
        # consumes it or the forward pass ends.
        self._pending: dict[int, tuple[str, torch.Tensor]] = {}
        self._acts: dict[str, _ActStats] = {}
        self._snapshot: dict[str, list[torch.Tensor]] = {}

        self._closed = False
        self._layer_params: dict[str, list[nn.Parameter]] = {}
        # (module, hook) pairs; the hooks are attached only for the steps that collect, so the
        # other steps' forward passes run without hook dispatch at all.
        self._hook_specs: list[tuple[nn.Module, Any]] = []
        for name, module in _leaf_layers(model):
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                self._layer_params[name] = params
            if isinstance(module, OUTPUT_LAYER_TYPES):
                self._hook_specs.append((module, self._layer_hook(name)))
            elif _is_activation(module):
                self._hook_specs.append((module, self._activation_hook(name, module)))
        if not isinstance(model, OUTPUT_LAYER_TYPES) and not _is_activation(model):
            self._hook_specs.append((model, self._end_of_forward))
        self._params = list(model.parameters())
        self._attach()

    def _attach(self) -> None:
        if not self._handles and not self._closed:
            self._handles = [m.register_forward_hook(h) for m, h in self._hook_specs]
            if self.grads_at_backward:
                record = self._record_backward_norm
                self._handles += [p.register_post_accumulate_grad_hook(record) for p in self._params if p.requires_grad]

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _record_backward_norm(self, p: torch.Tensor) -> None:
        grad = p.grad
        if grad is not None:
            # Summed in the wide type (no overflow below a norm of ~3e38), kept as float32: the 0-d result
            # stands in for the gradient in stats()' fused float32 norm, whose overflow redo covers it too.
            norm = torch.linalg.vector_norm(grad.detach(), dtype=_wide(grad.device))
            self._backward_norms[id(p)] = norm.float()

    def _sync_hooks(self) -> None:
        """Hooks on for a step that will collect, off otherwise."""
        if self.collecting:
            self._attach()
        else:
            self._detach()

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

        Per-tensor norms of gradients, weights and updates come from one
        fused ``_foreach_norm`` in float32 and are read back, with the
        activation statistics, in one transfer; they are combined per layer
        in float64 on the host. A tensor whose float32 norm overflows to Inf
        (a norm above ~1.8e19) is redone in float64, so finite values always
        give a finite norm.

        Returns
        -------
        dict[str, float]
            Metric name to value (see the class docstring); only ``grad_norm``
            (or nothing) on steps that do not collect.
        """
        collect = self.collecting
        self._calls += 1
        backward_norms, self._backward_norms = self._backward_norms, {}
        self._sync_hooks()
        if not collect:
            self._pending.clear()
            if not self.always_grad_norm:
                return {}
            grads = [p.grad for p in self._params if p.grad is not None]
            if not grads:
                return {}
            value = float(_total_norm(grads, torch.float32))
            if math.isinf(value):
                value = float(_total_norm(grads, _wide(grads[0].device)))
            return {"grad_norm": value}

        self._flush_pending()
        self._params = list(self.model.parameters())  # refreshed on collecting steps (lazy modules)
        layers = [(name, [p for p in ps if _is_initialized(p)]) for name, ps in self._layer_params.items()]
        layers = [(name, ps) for name, ps in layers if ps]
        seen = {id(p) for _, ps in layers for p in ps}

        # Every tensor whose norm is needed, in one list: gradients (per layer, then parameters
        # outside any leaf layer), weights, and the change of each layer's weights since the
        # previous collection (computed in place in the snapshot, which is refreshed below).
        # With grads_at_backward, a gradient's norm taken during backward() (a 0-d tensor, whose norm is
        # itself) stands in for the gradient, which may have been clipped since.
        tensors: list[torch.Tensor] = []
        grad_of: list[int] = []  # layer index per gradient, -1 for parameters outside layers
        repeated: set[int] = set()  # positions of a parameter shared with an earlier layer (tied weights)
        counted: set[int] = set()
        for li, (_, ps) in enumerate(layers):
            for p in ps:
                if p.grad is not None:
                    if id(p) in counted:
                        repeated.add(len(tensors))  # in its layers' norms, once in the global one
                    counted.add(id(p))
                    tensors.append(backward_norms.get(id(p), p.grad))
                    grad_of.append(li)
        for p in self._params:
            if p.grad is not None and id(p) not in seen:
                tensors.append(backward_norms.get(id(p), p.grad))
                grad_of.append(-1)
        n_grads = len(tensors)
        weight_of: list[int] = []
        d_new: list[torch.Tensor] = []
        d_old: list[torch.Tensor] = []
        delta_of: list[int] = []
        for li, (name, ps) in enumerate(layers):
            data = [p.detach() for p in ps]
            tensors.extend(data)
            weight_of.extend([li] * len(data))
            prev = self._snapshot.get(name)
            if prev is not None and len(prev) == len(data) and all(a.shape == b.shape for a, b in zip(prev, data)):
                d_new.extend(data)
                d_old.extend(prev)
                delta_of.extend([li] * len(data))
            else:
                self._snapshot[name] = [d.clone() for d in data]
        if d_new:
            torch._foreach_sub_(d_old, d_new)  # old - new, in place: no allocation
            tensors.extend(d_old)

        # Activation statistics gathered by the hooks during this step's forward passes.
        act_layers: list[tuple[str, _ActStats, int, int]] = []  # (layer, its statistics, floats, counts)
        act_floats: list[torch.Tensor] = []
        act_counts: list[torch.Tensor] = []
        for layer, acc in self._acts.items():
            if not acc.passes:
                continue
            floats, counts = acc.tensors()
            act_layers.append((layer, acc, len(floats), len(counts)))
            act_floats.extend(floats)
            act_counts.extend(counts)
        self._acts = {}

        norms: list[float] = []
        floats: list[float] = []
        counts: list[float] = []
        if tensors or act_floats:
            device = (tensors or act_floats)[0].device
            wide = _wide(device)
            pieces = []
            if tensors:
                pieces.append(_norm_vector(tensors, torch.float32))
            for group in (act_floats, act_counts):
                if group:
                    pieces.append(torch.cat([a if a.device == device else a.to(device) for a in group]))
            values = torch.cat([piece.to(wide) for piece in pieces]).tolist()  # the one transfer
            norms = values[: len(tensors)]
            floats = values[len(tensors) : len(tensors) + len(act_floats)]
            counts = values[len(tensors) + len(act_floats) :]
            if any(math.isinf(v) for v in norms):
                # A float32 sum of squares overflowed (a norm above ~1.8e19): redo those in float64.
                for k, v in enumerate(norms):
                    if math.isinf(v):
                        norms[k] = float(torch.linalg.vector_norm(tensors[k], dtype=wide))
        if d_new:
            torch._foreach_copy_(d_old, d_new)

        # Combine per layer in Python (float64): sqrt of summed squares.
        out: dict[str, float] = {}
        n_layers = len(layers)
        g_sq = [0.0] * n_layers
        has_grad = [False] * n_layers
        total = 0.0
        for k in range(n_grads):
            sq = norms[k] * norms[k]
            if k not in repeated:
                total += sq
            li = grad_of[k]
            if li >= 0:
                g_sq[li] += sq
                has_grad[li] = True
        w_sq = [0.0] * n_layers
        for k, li in enumerate(weight_of):
            w_sq[li] += norms[n_grads + k] ** 2
        d_sq = [0.0] * n_layers
        has_delta = [False] * n_layers
        base = n_grads + len(weight_of)
        for k, li in enumerate(delta_of):
            d_sq[li] += norms[base + k] ** 2
            has_delta[li] = True
        for li, (name, _) in enumerate(layers):
            if has_grad[li]:
                out[f"grad_norm/{name}"] = math.sqrt(g_sq[li])
        if n_grads:
            out["grad_norm"] = math.sqrt(total)
        tiny = torch.finfo(torch.float32).tiny
        for li, (name, _) in enumerate(layers):
            out[f"weight_norm/{name}"] = math.sqrt(w_sq[li])
        for li, (name, _) in enumerate(layers):
            if has_delta[li]:
                out[f"update_ratio/{name}"] = math.sqrt(d_sq[li]) / max(math.sqrt(w_sq[li]), tiny)
        at_float = at_count = 0
        for layer, acc, n_floats, n_counts in act_layers:
            mean, std, zero_frac, sat_frac = acc.combine(floats[at_float : at_float + n_floats],
                                                         counts[at_count : at_count + n_counts])
            at_float, at_count = at_float + n_floats, at_count + n_counts
            out[f"act/mean/{layer}"] = mean
            out[f"act/std/{layer}"] = std
            out[f"act/zero_frac/{layer}"] = zero_frac
            if acc.bounded:
                out[f"act/sat_frac/{layer}"] = sat_frac
        return out

    # -- lifecycle ---------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Names of the layers whose parameters are watched."""
        return list(self._layer_params)

    def close(self) -> None:
        """Remove the hooks and drop the weight snapshots."""
        self._closed = True
        self._detach()
        self._backward_norms.clear()
        self._pending.clear()
        self._acts.clear()
        self._snapshot.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grad_norm(parameters: Any) -> float | None:
    """Global L2 norm of the gradients of ``parameters`` (a module or an iterable of tensors); None without any.

    One fused pass in float32, redone in float64 only if that overflows.

    Examples
    --------
    >>> m = nn.Linear(3, 1); m(torch.ones(2, 3)).sum().backward()
    >>> round(grad_norm(m), 4) == round(torch.cat([p.grad.flatten() for p in m.parameters()]).norm().item(), 4)
    True
    """
    params = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    value = float(_total_norm(grads, torch.float32))
    if math.isinf(value):
        value = float(_total_norm(grads, _wide(grads[0].device)))
    return value


def _wide(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _norm_vector(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Per-tensor L2 norms as one 1-D tensor (on the first tensor's device), computed in ``dtype``."""
    device = tensors[0].device
    if dtype == torch.float64 and device.type == "mps":
        dtype = torch.float32
    if all(t.device == device for t in tensors):
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))
    return torch.stack([torch.linalg.vector_norm(t, dtype=dtype).to(device) for t in tensors])


def _total_norm(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.linalg.vector_norm(_norm_vector(tensors, dtype))
