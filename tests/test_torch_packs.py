"""shoal.torch: stacked replicas equal independent modules, and a packed training of the
streamflow LSTM equals the independent trainings (float64, 100 epochs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from shoal.torch import (  # noqa: E402
    Stacked,
    StackedLinear,
    StackedLSTM,
    clip_grad_norm_,
    replicas,
)

STREAMFLOW = Path(__file__).resolve().parent.parent / "examples" / "streamflow"


@pytest.mark.parametrize("mode", ["steps", "replicas"])
def test_stacked_lstm_equals_each_lstm(mode: str) -> None:
    lstms = replicas(lambda: nn.LSTM(3, 6, batch_first=True).double(), [4, 5, 6])
    assert not torch.equal(lstms[0].weight_hh_l0, lstms[1].weight_hh_l0)
    torch.manual_seed(4)
    assert torch.equal(nn.LSTM(3, 6, batch_first=True).weight_hh_l0.double(),
                       lstms[0].weight_hh_l0)  # seeded like an independent build
    stacked = StackedLSTM.from_modules(lstms, mode=mode)
    x = torch.randn(3, 5, 11, 3, dtype=torch.float64, requires_grad=True)
    out, (h, c) = stacked(x)
    out.sum().backward()
    for k, m in enumerate(lstms):
        xk = x[k].detach().clone().requires_grad_(True)
        o, (hk, ck) = m(xk)
        o.sum().backward()
        assert torch.allclose(o, out[k], rtol=0, atol=1e-12)
        assert torch.allclose(hk[0], h[k], atol=1e-12) and torch.allclose(ck[0], c[k], atol=1e-12)
        assert torch.allclose(m.weight_hh_l0.grad, stacked.weight_hh.grad[k], atol=1e-12)
        assert torch.allclose(xk.grad, x.grad[k], atol=1e-12)
    for m, back in zip(lstms, stacked.unstack()):
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                     back.state_dict().values()))


def test_stacked_linear_and_vmapped_modules() -> None:
    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    mods = replicas(build, [1, 2])
    x = torch.randn(2, 7, 4)
    stacked = Stacked(mods)
    y = stacked(x)
    lin = StackedLinear.from_modules([m[0] for m in mods])
    for k, m in enumerate(mods):
        assert torch.allclose(m(x[k]), y[k], atol=1e-6)
        assert torch.allclose(m[0](x[k]), lin(x)[k], atol=1e-6)
    back = stacked.unstack(build)
    assert torch.allclose(back[1](x[1]), mods[1](x[1]))
    assert isinstance(lin.unstack()[0], nn.Linear)


def test_clipping_is_per_replica() -> None:
    mods = replicas(lambda: nn.Linear(5, 3).double(), [0, 1, 2])
    lin = StackedLinear.from_modules(mods)
    scale = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)[:, None, None]
    x = torch.randn(3, 4, 5, dtype=torch.float64) * scale
    lin(x).pow(2).sum().backward()
    norms = clip_grad_norm_(lin.parameters(), 1.0)
    for k, m in enumerate(mods):
        m(x[k]).pow(2).sum().backward()
        before = nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        assert torch.allclose(before, norms[k])
        assert torch.allclose(m.weight.grad, lin.weight.grad[k], atol=1e-12)
        assert torch.allclose(m.bias.grad, lin.bias.grad[k], atol=1e-12)


@pytest.fixture(scope="module")
def streamflow():
    sys.path.insert(0, str(STREAMFLOW))
    import model
    import packed

    arrays = model.prep_arrays(model.simulate("01022500", n_days=400), seq_len=20)
    yield model, packed, arrays
    sys.path.remove(str(STREAMFLOW))
    for name in ("model", "packed"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("mode, lr, factors, seeds", [
    ("replicas", 0.01, [1.0, 1.0, 1.0], [0, 1, 2]),            # a pack over seeds
    ("replicas", 0.01, [0.0, 0.0, 5.0, 5.0], [0, 1, 0, 1]),    # over factor x seed
    ("steps", 0.001, [0.0, 0.0, 5.0, 5.0], [0, 1, 0, 1]),      # the GPU way, on the CPU
])
def test_packed_training_equals_independent_trainings(streamflow, mode, lr, factors,
                                                      seeds) -> None:
    model, packed, arrays = streamflow
    kw = {"epochs": 100, "lr": lr, "dtype": torch.float64, "hidden": 8, "batch_size": 16}
    models, histories = packed.train_packed(arrays, factors, seeds, lstm_mode=mode, **kw)
    for k, (f, s) in enumerate(zip(factors, seeds)):
        alone, history = model.train_model(arrays, f, s, **kw)
        for name, w in alone.state_dict().items():
            rel = ((w - models[k].state_dict()[name]).norm() / w.norm()).item()
            assert rel < 1e-6, (mode, k, name, rel)
        assert abs(history[-1]["loss"] - histories[k][-1]["loss"]) < 1e-9
