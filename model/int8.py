"""int8 inference on CPU: fbgemm's dynamic int8 GEMM (int8 weights with one scale per output row,
the input quantized to 8 bits at each call, int32 accumulation; VNNI where the CPU has it), made
independent of a row's batch-mates.

fbgemm picks one quantization range per call from the min and max of the whole input, so a row's
result would depend on the rows it is computed with. Both paths here pin that range:
- the decode step's products (int8_linear) append a constant anchor row [bound, -bound, 0, ...]
  to every input;
- the prompt path (PinnedLSTM) runs PyTorch's C++ dynamic-int8 LSTM (torch.quantized_lstm: one
  C++ loop, none of Python's per-op cost per character) on a copy of the network with two extra
  inputs and two extra hidden units per layer that hold +-bound at every position. Their weights
  are zero, so they change no other unit; they only fix each product's range.
"""
from __future__ import annotations

import functools
import warnings

import torch

from model.state import State


def int8_prepack(w: torch.Tensor, bias: torch.Tensor | None):
    """w (out, in) fp32 -> fbgemm's packed int8 weights, one scale per output row (symmetric)."""
    scale = (w.abs().amax(1).clamp_min(1e-8) / 127).double()
    with warnings.catch_warnings():
        # PyTorch marks quantized-tensor creation deprecated (torch.ao's successor is torchao);
        # torch is pinned here, and torch._int_mm with the quantization done in Python measured
        # slower at the small batches of decoding (one fused C++ op here against ~7 ops there).
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, bias)


@functools.cache  # a property of the CPU
def vnni() -> bool:
    try:
        return bool(torch.cpu._is_vnni_supported())
    except Exception:
        return False


def reduce_range() -> bool:
    """Without VNNI, fbgemm's int16 intermediate sums can saturate at the full 8-bit range, so
    activations keep 7 bits there (PyTorch's choice too)."""
    return not vnni()


def int8_linear(weight: torch.Tensor, bias: torch.Tensor | None, bound: float):
    """x (B, in) -> (B, out), every |x| <= bound. The anchor row appended to every input pins the
    range to [-bound, bound]: a row's result is the same alone and in any batch
    (tests/test_precision.py)."""
    w = weight.float().contiguous()
    packed = int8_prepack(w, None if bias is None else bias.float().contiguous())
    anchor = torch.zeros(1, w.shape[1])
    anchor[0, 0], anchor[0, 1 % w.shape[1]] = bound, -bound
    rr = reduce_range()

    def f(x):
        return torch.ops.quantized.linear_dynamic(torch.cat([x, anchor]), packed, rr)[:-1]
    return f


PIN = 2           # pinned inputs / hidden units per layer: one at +bound, one at -bound
_SATURATE = 100.0  # a gate pre-activation whose sigmoid and tanh are exactly 1 in fp32
_C_PIN = 20.0      # |c| of a pinned unit: tanh is exactly 1 in fp32 beyond ~9


class PinnedLSTM:
    """(x (B, T) ids, State) -> (logits (B, T, V), State): an nn.LSTM model's prompt path in int8.

    Each layer gets PIN extra inputs and PIN extra hidden units (weights zero). A pinned unit's
    i, f and o gates are saturated at 1 by their biases and its g at +1 or -1, and it starts from
    c = +-20: c only grows in magnitude, so h = o * tanh(c) is exactly +1 or -1 at every position.
    Layer 0 reads the embedding with two pinned inputs at +-max|embedding|; an upper layer reads
    the pinned units of the one below. So every product's input holds its range's ends in every
    row. The hidden range [-1, 1] holds only if the start state does: `fits` says so."""

    def __init__(self, model):
        m, H, L = model.core, model.cfg.hidden, model.cfg.layers
        self.H, self.layers, self.head = H, L, model.head
        with torch.no_grad():
            emb = model.embed.weight.float()
            emax = float(emb.abs().max())
            self.table = torch.cat([emb, torch.tensor([[emax, -emax]]).expand(emb.shape[0], PIN)], 1)  # (V, E+2)
            pin_bias = torch.tensor([[_SATURATE] * PIN] * 4)  # rows i, f, g, o
            pin_bias[2, 1] = -_SATURATE                      # the second unit's g = -1
            self.packed, self.params = [], []  # per layer: packed (W_ih, W_hh); the C++ LSTM's cell params
            for k in range(L):
                b_ih = torch.cat([getattr(m, f"bias_ih_l{k}").view(4, H), pin_bias], 1).reshape(-1)
                b_hh = torch.cat([getattr(m, f"bias_hh_l{k}").view(4, H), torch.zeros(4, PIN)], 1).reshape(-1)
                w_ih, w_hh = (self._grow(getattr(m, f"weight_{n}_l{k}")) for n in ("ih", "hh"))
                self.packed.append((int8_prepack(w_ih, b_ih), int8_prepack(w_hh, b_hh)))
                self.params.append(torch.ops.quantized.make_quantized_cell_params_dynamic(
                    *self.packed[-1], b_ih, b_hh, reduce_range()))
        self.h_pin, self.c_pin = torch.tensor([1.0, -1.0]), torch.tensor([_C_PIN, -_C_PIN])  # (PIN,) each

    @staticmethod
    def fits(model) -> bool:
        """The hidden range [-1, 1] the pins hold must cover the learned start state."""
        return float(model.h0.detach().abs().max()) <= 1.0

    def _grow(self, w: torch.Tensor) -> torch.Tensor:
        """(4H, in) in nn's gate order -> (4(H+PIN), in+PIN): zero rows after each gate's block,
        zero columns for the pinned inputs."""
        w = torch.cat([w.float(), torch.zeros(w.shape[0], PIN)], 1).view(4, self.H, -1)
        return torch.cat([w, torch.zeros(4, PIN, w.shape[2])], 1).reshape(4 * (self.H + PIN), -1)

    def run_pinned(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T) ids -> out (B, T, H+PIN), h, c (layers, B, H+PIN): the pinned units included."""
        (h, c), (L, B, _) = state.parts, state.parts[0].shape
        h = torch.cat([h, self.h_pin.expand(L, B, PIN)], 2)
        c = torch.cat([c, self.c_pin.expand(L, B, PIN)], 2)
        return torch.quantized_lstm(self.table[x], (h, c), self.params, True, L, 0.0, False, False, True,
                                    dtype=torch.qint8, use_dynamic=True)

    def __call__(self, x: torch.Tensor, state: State, last_only: bool = False) -> tuple[torch.Tensor, State]:
        out, h, c = self.run_pinned(x, state)
        H = self.H
        return (self.head(out[:, -1:, :H] if last_only else out[..., :H]),
                State((h[..., :H].contiguous(), c[..., :H].contiguous())))
