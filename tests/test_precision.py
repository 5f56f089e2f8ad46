"""CHARRNN_PRECISION=auto: the decode-step precision is chosen by timing the candidates at start."""
import time

import pytest
import torch

from model.fused import candidate_precisions, fp16_available, probe_precision


class _Timed:
    """A stand-in model whose step takes longer in some precisions (no dependence on the machine)."""

    def __init__(self, cost_s: dict):
        self.cost_s, self.precision, self.calls = cost_s, None, []
        self.head = torch.nn.Linear(2, 2)

    def set_precision(self, p):
        self.precision = p

    def init_hidden(self, batch):
        return torch.zeros(1, batch, 2), torch.zeros(1, batch, 2)

    def __call__(self, x, state):
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


def test_candidates_by_device():
    assert candidate_precisions("cpu") == (["fp32", "fp16"] if fp16_available() else ["fp32"])
    assert candidate_precisions("cuda") == ["fp32"]


def test_the_service_reports_what_it_measured(make_app):
    info = make_app(precision="auto").test_client().get("/info").get_json()
    if fp16_available():
        assert set(info["precision_probe"]) == {"fp32", "fp16"}
        assert info["precision"] == min(info["precision_probe"], key=info["precision_probe"].get)
    fixed = make_app(precision="fp32").test_client().get("/info").get_json()
    assert fixed["precision"] == "fp32" and fixed["precision_probe"] is None
