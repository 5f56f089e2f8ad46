"""CHARRNN_PRECISION=auto: the decode-step precision is chosen by timing the candidates at start."""
import time

import pytest
import torch

from model.fused import fused_step, prefill
from model.int8 import PinnedLSTM
from model.precision import (INT8_MAX_COST, candidate_precisions, fp16_available, int8_available, int8_cost,
                             probe_precision)
from model.state import State


class _Timed:
    """A stand-in model whose step takes longer in some precisions (no dependence on the machine)."""

    def __init__(self, cost_s: dict):
        self.cost_s, self.precision, self.calls = cost_s, None, []
        self.head = torch.nn.Linear(2, 2)

    def set_precision(self, p):
        self.precision = p

    def init_hidden(self, batch):
        return torch.zeros(1, batch, 2), torch.zeros(1, batch, 2)

    def __call__(self, x, state, *, infer=False):
        assert infer  # the probe times the inference kernels, not the nn module
        self.calls.append((self.precision, x.shape[0]))
        time.sleep(self.cost_s[self.precision])


@pytest.mark.parametrize("slow", ["fp32", "fp16"])
def test_the_probe_picks_the_fastest_and_leaves_the_model_in_it(slow):
    fast = {"fp32": "fp16", "fp16": "fp32"}[slow]
    m = _Timed({slow: 0.004, fast: 0.0005})
    best, scores = probe_precision(m, ["fp32", "fp16"], steps=3)
    assert best == fast and m.precision == fast
    assert set(scores) == {"fp32", "fp16"} and scores[slow] > scores[fast]
    assert {b for _, b in m.calls} == {1, 16}  # both regimes measured


def test_a_single_candidate_is_not_timed():
    m = _Timed({"fp32": 0.0})
    assert probe_precision(m, ["fp32"]) == ("fp32", {}) and m.calls == []


def _card(**costs) -> dict:
    ev = {"stateful": {"loss": 1.5}}
    ev.update({k: {"loss": 1.5 + v} for k, v in costs.items()})
    return {"evaluation": ev}


def test_candidates_by_device():
    assert candidate_precisions("cpu") == (["fp32", "fp16"] if fp16_available() else ["fp32"])
    assert candidate_precisions("cuda") == ["fp32"]
    assert candidate_precisions("cuda", _card(stateful_int8=0.0, stateful_int8_stepwise=0.0)) == ["fp32"]


def test_int8_is_a_candidate_only_where_the_card_shows_it_measured_and_cheap():
    """int8 rounds activations as well as weights: auto may pick it only for weights whose card
    records its validation cost through both inference paths (model.evaluate --record)."""
    cheap = _card(stateful_int8=0.002, stateful_int8_stepwise=-0.001)
    assert int8_cost(cheap) == pytest.approx(0.002)
    assert ("int8" in candidate_precisions("cpu", cheap)) == int8_available()
    for card in (None, {}, _card(stateful_int8=0.002),  # one path unmeasured
                 _card(stateful_int8=0.002, stateful_int8_stepwise=INT8_MAX_COST + 0.001)):
        assert "int8" not in candidate_precisions("cpu", card)


needs_int8 = pytest.mark.skipif(not int8_available(), reason="no fbgemm int8 kernels in this torch build / CPU")


@needs_int8
def test_an_int8_row_does_not_depend_on_its_batch_mates(tiny_model):
    """fbgemm quantizes a whole input with one range; the anchor row fixes that range, so a row's
    product is the same alone as beside rows of any (bounded) magnitude."""
    model, _ = tiny_model
    step = fused_step(model, "int8")
    torch.manual_seed(0)
    h = torch.rand(5, model.cfg.hidden) * 0.2 - 0.1   # row 0: small values
    h[1:] = torch.rand(4, model.cfg.hidden) * 2 - 1    # batch-mates: the whole tanh range
    ih, hh = step._layerwise
    for mat in step.mats[:1] + hh[1:] + ih[1:]:  # inputs (B, H)
        assert torch.equal(mat(h[:1]), mat(h)[:1])
    hh2 = torch.cat([h, h.flip(0)], 1)           # upper layers' step: [input, h] (B, 2H)
    for mat in step.mats[1:]:
        assert torch.equal(mat(hh2[:1]), mat(hh2)[:1])
    x = torch.tensor([3, 1, 4, 1, 5])
    alone, _ = step(x[:1], model.init_hidden(1))
    together, _ = step(x, State((torch.cat([model.init_hidden(1).parts[0], h[1:].expand(model.cfg.layers, -1, -1)], 1),
                                 torch.cat([model.init_hidden(1).parts[1], torch.randn(model.cfg.layers, 4, model.cfg.hidden)], 1))))
    assert torch.allclose(alone[0], together[0], atol=1e-5)


def _fp32_log_probs(model, x):
    """(B, T, V) log-probabilities of the nn module in fp32 from the start state: the reference."""
    out, _ = model.core(model.embed(x), tuple(model.init_hidden(x.shape[0]).parts))
    return torch.log_softmax(model.head(out), -1)


def _step_by_step(step, model, x):
    """x (B, T) through the decode step one character at a time -> (logits (B, T, V), State)."""
    state, outs = model.init_hidden(x.shape[0]), []
    for t in range(x.shape[1]):
        logits, state = step(x[:, t], state)
        outs.append(logits)
    return torch.cat(outs, 1), state


def _prompt_follows_steps(prompt, step, model, x, tol: float, ref_tol: float):
    """A prompt path over x (B, T) gives the decode step's logits and cell state, one character
    at a time, within tol, and the fp32 nn module's log-probabilities within ref_tol."""
    whole, s1 = prompt(x, model.init_hidden(x.shape[0]))
    stepped, state = _step_by_step(step, model, x)
    assert torch.allclose(whole, stepped, atol=tol)
    assert torch.allclose(s1.parts[1], state.parts[1], atol=tol)
    err = (torch.log_softmax(whole, -1) - _fp32_log_probs(model, x)).abs().max()
    assert err < ref_tol, (step.precision, err)


@needs_int8
def test_int8_follows_fp32_and_its_prompt_path_follows_its_step(tiny_model):
    model, _ = tiny_model
    torch.manual_seed(1)
    x = torch.randint(0, model.cfg.vocab_size, (3, 24))
    with torch.no_grad():
        for p in ("fp32", "int8"):
            # layer by layer = step by step (in int8 up to rounding: the step quantizes an upper
            # layer's [input, h] with one scale per row of the stacked [W_ih | W_hh], the prompt path each apart)
            step = fused_step(model, p)
            _prompt_follows_steps(step.prefill, step, model, x, tol=1e-5 if p == "fp32" else 3e-3,
                                  ref_tol=1e-4 if p == "fp32" else 0.05)


@needs_int8
def test_an_int8_prompt_does_not_depend_on_its_batch_mates(tiny_model):
    """The int8 prompt path (PyTorch's C++ int8 LSTM) quantizes each product's whole input with
    one range; the pinned units hold that range's ends in every row, so a prompt read alone gives
    the same logits and state as read beside any others, and the pinned units stay at +-1."""
    model, _ = tiny_model
    with torch.no_grad():
        model.h0.uniform_(-0.5, 0.5)
        pinned = prefill(model, "int8")
        assert isinstance(pinned, PinnedLSTM)
        torch.manual_seed(2)
        x = torch.randint(0, model.cfg.vocab_size, (4, 20))
        x[1:, ::3] = x[0, 0]  # batch-mates sharing some characters, others not
        state = model.init_hidden(4)
        state.parts[0][:, 1:] = torch.rand(model.cfg.layers, 3, model.cfg.hidden) * 2 - 1  # mates mid-text
        alone, s1 = pinned(x[:1], model.init_hidden(1))
        together, s4 = pinned(x, state)
        assert torch.equal(alone[0], together[0])
        assert all(torch.equal(a[:, 0], b[:, 0]) for a, b in zip(s1.parts, s4.parts))
        # the mechanism: the pinned units' outputs are exactly +1 and -1 at every position
        out = pinned.run_pinned(x, state)[0]
        assert torch.equal(out[..., model.cfg.hidden:], torch.tensor([1.0, -1.0]).expand(4, 20, 2))


@needs_int8
def test_the_int8_prompt_path_follows_fp32_and_the_int8_step(tiny_model):
    model, _ = tiny_model
    torch.manual_seed(3)
    x = torch.randint(0, model.cfg.vocab_size, (3, 24))
    with torch.no_grad():
        # the same model in int8 both ways, up to rounding: the prompt path also quantizes the
        # embedding (the step reads exact fp32 rows of its table) and each layer's W_ih and W_hh apart
        _prompt_follows_steps(prefill(model, "int8"), fused_step(model, "int8"), model, x, tol=0.02, ref_tol=0.05)


@needs_int8
def test_int8_prompts_fall_back_to_the_layerwise_path_for_a_start_state_past_one(tiny_model):
    """The pinned units hold +-1: a learned start state beyond that would widen a row's range."""
    model, _ = tiny_model
    with torch.no_grad():
        model.h0.fill_(1.5)
        assert not PinnedLSTM.fits(model) and not isinstance(prefill(model, "int8"), PinnedLSTM)


@needs_int8
def test_the_service_serves_in_int8_when_asked(make_app):
    client = make_app(precision="int8").test_client()
    assert client.get("/info").get_json()["precision"] == "int8"
    r = client.post("/generate", json={"prompt": "ab", "max_new_chars": 12, "seed": 3})
    assert r.status_code == 200 and r.get_json()["usage"]["generated_chars"] == 12
    body = {"text": "hello " * 20, "top_k": 5}
    int8 = client.post("/predict-next", json=body).get_json()["predictions"]
    fp32 = make_app(precision="fp32").test_client().post("/predict-next", json=body).get_json()["predictions"]
    assert len(int8) == 5
    assert [c["prob"] for c in int8] == pytest.approx([c["prob"] for c in fp32], abs=0.02)


def test_the_service_reports_what_it_measured(make_app):
    info = make_app(precision="auto").test_client().get("/info").get_json()
    if fp16_available():
        assert set(info["precision_probe"]) == {"fp32", "fp16"}
        assert info["precision"] == min(info["precision_probe"], key=info["precision_probe"].get)
    fixed = make_app(precision="fp32").test_client().get("/info").get_json()
    assert fixed["precision"] == "fp32" and fixed["precision_probe"] is None


@needs_int8
def test_a_step_reads_a_quarter_of_the_fp32_matrix_bytes_in_int8(tiny_model):
    """nbytes, the roofline's numerator: recurrent matrices at 4, 2 and 1 bytes, the fp32 head at 4."""
    model, _ = tiny_model
    head = model.head.weight.numel() * 4
    sizes = {p: fused_step(model, p).nbytes - head for p in ("fp32", "fp16", "int8")}
    assert sizes["fp32"] == 2 * sizes["fp16"] == 4 * sizes["int8"] > 0
