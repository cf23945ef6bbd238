"""Train K replicas of one small architecture as one stacked model (for packed steps).

Every parameter gets a leading replica dimension ``K``; inputs are ``[K, batch, ...]``.
The replicas share nothing but the kernels that run them: with the *sum* of the per-replica
losses, each replica's gradient is that of its own loss, and Adam (elementwise) on the
stacked parameters equals K independent Adams. Helpers here keep it so — e.g.
:func:`clip_grad_norm_` clips each replica by its own norm, never by a global one.

* :func:`replicas` builds one module per seed, each under ``torch.manual_seed(seed)``, so the
  stack starts from exactly the weights of the independent trainings;
* :class:`StackedLSTM` — a batched single-layer LSTM (``nn.LSTM`` has no ``vmap`` rule);
* :class:`StackedLinear` — a batched ``nn.Linear``;
* :class:`Stacked` — any module ``torch.func.vmap`` supports, through ``functional_call``;
* each has ``unstack()``: the replicas back as ordinary modules, to save per member.

Imported only when used (``import shoal`` never imports torch).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def replicas(build: Callable[[], nn.Module], seeds: Iterable[int]) -> list[nn.Module]:
    """``build()`` once per seed, right after ``torch.manual_seed(seed)``: the modules an
    independent training of each seed would start from."""
    out = []
    for seed in seeds:
        torch.manual_seed(int(seed))
        out.append(build())
    return out


def per_replica(values: Sequence[float], like: Tensor) -> Tensor:
    """A hyper-parameter per replica (e.g. loss factors) as a ``[K]`` tensor like ``like``."""
    return torch.as_tensor(list(values), dtype=like.dtype, device=like.device)


def _stack(tensors: Sequence[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach().clone() for t in tensors]))


class StackedLinear(nn.Module):
    """K independent ``nn.Linear`` layers: ``[K, ..., in] -> [K, ..., out]``."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True,
                 dtype: torch.dtype | None = None, device: Any = None) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features, dtype=dtype,
                                               device=device))
        self.bias = (nn.Parameter(torch.empty(k, out_features, dtype=dtype, device=device))
                     if bias else None)

    @classmethod
    def from_modules(cls, layers: Sequence[nn.Linear]) -> StackedLinear:
        first = layers[0]
        self = cls(len(layers), first.in_features, first.out_features, first.bias is not None,
                   dtype=first.weight.dtype, device=first.weight.device)
        self.weight = _stack([m.weight for m in layers])
        if self.bias is not None:
            self.bias = _stack([m.bias for m in layers])
        return self

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(self.k, -1, self.in_features)
        if self.bias is not None:
            y = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        else:
            y = torch.bmm(flat, self.weight.transpose(1, 2))
        return y.reshape(*shape[:-1], self.out_features)

    def unstack(self) -> list[nn.Linear]:
        out = []
        for k in range(self.k):
            m = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                          dtype=self.weight.dtype, device=self.weight.device)
            with torch.no_grad():
                m.weight.copy_(self.weight[k])
                if self.bias is not None:
                    m.bias.copy_(self.bias[k])
            out.append(m)
        return out


class StackedLSTM(nn.Module):
    """K independent single-layer, ``batch_first`` LSTMs run as one.

    ``forward(x)`` takes ``[K, batch, time, input]`` and returns the outputs
    ``[K, batch, time, hidden]`` and the last ``(h, c)``, each ``[K, batch, hidden]``, with
    the gate equations and gate order (input, forget, cell, output) of ``nn.LSTM``.

    Two ways to run it (``mode``): ``"steps"`` loops over time once for all replicas
    (batched matrix products: few, larger kernels — the fast way on a GPU, where launches
    dominate); ``"replicas"`` runs ``nn.LSTM``'s own fused kernel once per replica on its
    slice of the stacked weights (on a CPU that kernel beats any per-step Python loop).
    ``"auto"`` (default): ``"steps"`` on CUDA, ``"replicas"`` elsewhere.
    """

    def __init__(self, k: int, input_size: int, hidden_size: int,
                 dtype: torch.dtype | None = None, device: Any = None,
                 mode: str = "auto") -> None:
        super().__init__()
        if mode not in ("auto", "steps", "replicas"):
            raise ValueError(f"mode={mode!r}: use 'auto', 'steps' or 'replicas'")
        self.mode = mode
        self.k, self.input_size, self.hidden_size = k, input_size, hidden_size
        g = 4 * hidden_size
        kw = {"dtype": dtype, "device": device}
        self.weight_ih = nn.Parameter(torch.empty(k, g, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(k, g, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(k, g, **kw))
        self.bias_hh = nn.Parameter(torch.empty(k, g, **kw))

    @classmethod
    def from_modules(cls, lstms: Sequence[nn.LSTM], mode: str = "auto") -> StackedLSTM:
        first = lstms[0]
        for m in lstms:
            if m.num_layers != 1 or m.bidirectional or not m.batch_first or not m.bias \
                    or int(getattr(m, "proj_size", 0)):
                raise ValueError("StackedLSTM stacks single-layer, unidirectional, "
                                 "batch_first nn.LSTM modules with biases")
        self = cls(len(lstms), first.input_size, first.hidden_size,
                   dtype=first.weight_ih_l0.dtype,  # type: ignore[arg-type]
                   device=first.weight_ih_l0.device, mode=mode)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self, name, _stack([getattr(m, f"{name}_l0") for m in lstms]))
        return self

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        mode = self.mode
        if mode == "auto":
            mode = "steps" if x.is_cuda else "replicas"
        if mode == "replicas":
            return self._by_replica(x, state)
        k, b, t, _ = x.shape
        hid = self.hidden_size
        # the operations of ATen's LSTM, in its order (so float64 results match closely):
        # the input projection of every time step at once, then per step
        # gates = (h W_hh^T + b_hh) + (x W_ih^T + b_ih)
        xw = torch.baddbmm(self.bias_ih.unsqueeze(1), x.reshape(k, b * t, self.input_size),
                           self.weight_ih.transpose(1, 2)).reshape(k, b, t, 4 * hid)
        b_hh = self.bias_hh.unsqueeze(1)
        if state is None:
            h = x.new_zeros(k, b, hid)
            c = x.new_zeros(k, b, hid)
        else:
            h, c = state
        w_hh = self.weight_hh.transpose(1, 2)  # [K, H, 4H]
        outs = []
        for step in range(t):
            gates = torch.baddbmm(b_hh, h, w_hh) + xw[:, :, step]
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=2), (h, c)

    def _by_replica(self, x: Tensor, state: tuple[Tensor, Tensor] | None
                    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        outs, hs, cs = [], [], []
        b = x.shape[1]
        for k in range(self.k):
            if state is None:
                h0 = c0 = x.new_zeros(1, b, self.hidden_size)
            else:
                h0, c0 = state[0][k].unsqueeze(0), state[1][k].unsqueeze(0)
            weights = [self.weight_ih[k], self.weight_hh[k], self.bias_ih[k], self.bias_hh[k]]
            out, h, c = torch.lstm(x[k], (h0, c0), weights, True, 1, 0.0, self.training,
                                   False, True)
            outs.append(out)
            hs.append(h[0])
            cs.append(c[0])
        return torch.stack(outs), (torch.stack(hs), torch.stack(cs))

    def unstack(self) -> list[nn.LSTM]:
        out = []
        for k in range(self.k):
            m = nn.LSTM(self.input_size, self.hidden_size, batch_first=True,
                        dtype=self.weight_ih.dtype, device=self.weight_ih.device)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(m, f"{name}_l0").copy_(getattr(self, name)[k])
            out.append(m)
        return out


class Stacked(nn.Module):
    """K replicas of any module ``torch.func.vmap`` can batch (Linear, MLPs, convs...):
    parameters stacked with ``torch.func.stack_module_state``, run with ``functional_call``
    under ``vmap``. ``forward(*inputs)`` takes inputs with a leading ``K`` dimension."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        from torch.func import stack_module_state

        params, buffers = stack_module_state(list(modules))
        self.k = len(modules)
        self._names = list(params)
        self.stacked = nn.ParameterDict(
            {n.replace(".", "__"): nn.Parameter(p) for n, p in params.items()})
        for n, b in buffers.items():
            self.register_buffer("buf__" + n.replace(".", "__"), b)
        self._buffer_names = list(buffers)
        self._template = [copy.deepcopy(modules[0]).to("meta")]  # not a submodule

    def _stacked_params(self) -> dict[str, Tensor]:
        return {n: self.stacked[n.replace(".", "__")] for n in self._names}

    def _stacked_buffers(self) -> dict[str, Tensor]:
        return {n: getattr(self, "buf__" + n.replace(".", "__")) for n in self._buffer_names}

    def forward(self, *inputs: Tensor) -> Any:
        from torch.func import functional_call, vmap

        template = self._template[0]

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], *xs: Tensor) -> Any:
            return functional_call(template, (params, buffers), xs)

        return vmap(one)(self._stacked_params(), self._stacked_buffers(), *inputs)

    def state_dicts(self) -> list[dict[str, Tensor]]:
        """Each replica's ``state_dict`` (detached copies)."""
        tensors = {**self._stacked_params(), **self._stacked_buffers()}
        return [{n: t[k].detach().clone() for n, t in tensors.items()} for k in range(self.k)]

    def unstack(self, build: Callable[[], nn.Module]) -> list[nn.Module]:
        """The replicas as modules made by ``build()`` with their weights loaded."""
        out = []
        for sd in self.state_dicts():
            m = build()
            m.load_state_dict(sd)
            out.append(m)
        return out


def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float) -> Tensor:
    """``nn.utils.clip_grad_norm_`` for each replica on its own: every parameter has the
    replica dimension first; returns the ``[K]`` norms before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    k = grads[0].shape[0]
    # per replica exactly as torch does it for one model: the norm of each parameter's
    # gradient, then the norm of those norms (the same reductions, the same rounding)
    total = torch.stack([
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g[r], 2)
                                              for g in grads]), 2)
        for r in range(k)])  # [K]
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))
    return total
