"""The character-level features both APIs share: logit bias by character, regex constraints
(compiled in a helper process with a time limit) and the shape of per-character logprobs.

Kept apart from the endpoints so /generate and /v1/completions validate them alike; errors are
raised as FeatureError(field, message) and each API turns them into its own error shape.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from model.constraints import RegexConstraint, RegexError

WORKER = Path(__file__).resolve().parents[2] / "model" / "constraints.py"


class FeatureError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def bias_ids(vocab, bias: dict[str, float], field: str = "logit_bias") -> tuple[tuple[int, float], ...]:
    """{character: bias} -> ((vocabulary id, bias), ...); a character the model lacks is an error
    (it could never be sampled anyway, so the client has likely mistyped)."""
    unknown = sorted(set(bias) - set(vocab.chars))
    if unknown:
        raise FeatureError(field, f"character(s) not in the model's vocabulary: {unknown[:10]}")
    return tuple((vocab.index(ch), float(b)) for ch, b in bias.items())


def banned(bias: tuple[tuple[int, float], ...]) -> frozenset[int]:
    return frozenset(i for i, b in bias if b <= -100)


def check_bans(vocab, bias: tuple[tuple[int, float], ...], field: str = "logit_bias"):
    if len(banned(bias)) >= len(vocab):
        raise FeatureError(field, "bans every character of the vocabulary")


def char_logprobs(vocab, text: str, entries: list) -> list[dict]:
    """/generate's shape: [{"char", "logprob", "top": [{"char", "logprob"}]}] per character."""
    return [{"char": ch, "logprob": floor(lp),
             "top": [{"char": vocab.chars[i], "logprob": floor(v)} for i, v in top]}
            for ch, (lp, top) in zip(text, entries)]


FLOOR = -9999.0  # JSON has no -inf: a character with no probability at all (as vLLM reports it)


def floor(x: float) -> float:
    return x if x > FLOOR else FLOOR  # NaN too (x > FLOOR is False)


class RegexCompiler:
    """Patterns -> RegexConstraint, once per pattern (LRU), in a helper process.

    Some regexes have exponentially many DFA states: `(a|b)*a(a|b){12}` takes interegular 7 s
    of pure Python. In an HTTP thread that would hold the GIL against the engine thread and
    slow every stream; in the helper it costs one core, and is killed at `timeout_s` (then the
    request gets a clear 422). One compile at a time per worker; repeats come from the cache.
    """

    def __init__(self, timeout_s: float = 3.0, max_states: int = 5000, cache: int = 64):
        self.timeout_s, self.max_states, self.size = timeout_s, max_states, cache
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def compile(self, pattern: str, chars: list[str], banned: frozenset[int] = frozenset(),
                field: str = "regex") -> RegexConstraint:
        """Over a model's vocabulary `chars` (one helper serves every model's)."""
        key = (pattern, "".join(chars), banned)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            try:
                c = RegexConstraint(**self._ask({"pattern": pattern, "chars": list(chars), "banned": sorted(banned),
                                                 "max_states": self.max_states}))
            except RegexError as e:
                raise FeatureError(field, str(e)) from None
            self._cache[key] = c
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return c

    def _ask(self, req: dict) -> dict:
        if self._proc is None or self._proc.poll() is not None:
            # -I: isolated, and the script's folder is not on sys.path (model/ shadows nothing)
            self._proc = subprocess.Popen([sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, encoding="utf-8")
        proc, ready = self._proc, []
        try:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            ready = select.select([proc.stdout], [], [], self.timeout_s)[0]
            line = proc.stdout.readline() if ready else ""
        except OSError:
            line = ""
        if not line:
            self.close()
            if not ready:
                raise RegexError(f"regex too complex: not compiled within {self.timeout_s:g} s")
            raise RegexError("the regex compiler failed")
        out = json.loads(line)
        if "error" in out:
            raise RegexError(out["error"])
        return out["tables"]

    def close(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
