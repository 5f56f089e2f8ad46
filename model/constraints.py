"""Regex-constrained generation: a DFA over the model's characters, compiled once per pattern.

interegular (a maintained port of greenery; lark and outlines build their regex guides on it)
turns a Python regex into a DFA. Here it is restricted to the vocabulary (minus banned
characters) and pruned to the states from which a full match can still be reached, so at every
step the allowed characters are exactly those that keep the text a viable prefix of a match:
a constrained completion can never paint itself into a corner.

The tables are plain lists (picklable: the service compiles in a helper process with a time
limit, since some patterns have exponentially many DFA states); RegexConstraint adds the
(S, V) mask tensor the sampler reads.
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field


class RegexError(ValueError):
    """The pattern is invalid, unsupported, too complex, or no completion can match it."""


def compile_tables(pattern: str, chars: list[str], banned: frozenset[int] = frozenset(),
                   max_states: int = 5000) -> dict:
    """pattern -> {"next": S x V ids of the next state (-1: dead), "final": S bools}; state 0 is
    the start. Only live states are kept (a full match is reachable from each)."""
    import interegular  # a serve-extra dependency; the training CLI never needs it

    try:
        re.compile(pattern)  # Python's own parser gives the clearest syntax errors
    except re.error as e:
        raise RegexError(f"invalid regex: {e}") from None
    try:
        fsm = interegular.parse_pattern(pattern).to_fsm()
    except Exception as e:  # interegular.Unsupported / InvalidSyntax (anchors, backreferences, ...)
        raise RegexError(f"unsupported regex construct: {e}") from None
    # Each usable character -> its transition key (None: not in the pattern's alphabet, or banned).
    keys = [None if i in banned else fsm.alphabet[c] for i, c in enumerate(chars)]
    usable = {k for k in keys if k is not None}
    back = defaultdict(set)  # reverse edges over usable keys, to find the live states
    for s, out in fsm.map.items():
        for k, t in out.items():
            if k in usable:
                back[t].add(s)
    live, todo = set(fsm.finals), list(fsm.finals)
    while todo:
        for s in back[todo.pop()]:
            if s not in live:
                live.add(s)
                todo.append(s)
    if fsm.initial not in live:
        raise RegexError("no text of the model's characters can match this regex")
    number, order, nxt = {fsm.initial: 0}, [fsm.initial], []
    while len(nxt) < len(order):  # breadth-first over reachable live states
        row, out = [], fsm.map.get(order[len(nxt)], {})
        for k in keys:
            t = out.get(k) if k is not None else None
            if t is None or t not in live:
                row.append(-1)
                continue
            if t not in number:
                if len(order) >= max_states:
                    raise RegexError(f"regex too complex: more than {max_states} automaton states")
                number[t] = len(order)
                order.append(t)
            row.append(number[t])
        nxt.append(row)
    final = [s in fsm.finals for s in order]
    if not any(t >= 0 for t in nxt[0]):
        raise RegexError("the regex matches only the empty text")
    return {"next": nxt, "final": final}


@dataclass(eq=False)
class RegexConstraint:
    """The compiled automaton of one pattern; immutable, shared by every row that uses it.
    A row's progress is just a state number (0 at the start)."""
    next: list[list[int]]             # S x V
    final: list[bool]                 # S: the text so far is a full match
    allowed: "torch.Tensor" = field(init=False)  # (S, V) bool: characters that keep a match reachable
    closed: list[bool] = field(init=False)     # S: a full match that no character can extend

    def __post_init__(self):
        import torch  # here, not at the top: the compile worker (below) runs without torch

        self.allowed = torch.tensor(self.next, dtype=torch.long) >= 0
        self.closed = [f and not any(t >= 0 for t in row) for f, row in zip(self.final, self.next)]

    @classmethod
    def compile(cls, pattern: str, chars: list[str], banned: frozenset[int] = frozenset(),
                max_states: int = 5000) -> "RegexConstraint":
        return cls(**compile_tables(pattern, chars, banned, max_states))

    def step(self, state: int, idx: int) -> int:
        return self.next[state][idx]


def serve(stdin=sys.stdin, stdout=sys.stdout):
    """The service's compile worker (service/features.py runs `python -I model/constraints.py`):
    one JSON request per line in, one JSON answer per line out, until stdin closes."""
    for line in stdin:
        req = json.loads(line)
        try:
            out = {"tables": compile_tables(req["pattern"], req["chars"], frozenset(req["banned"]), req["max_states"])}
        except RegexError as e:
            out = {"error": str(e)}
        except Exception as e:  # anything interegular did not foresee: the request's fault, said plainly
            out = {"error": f"regex not supported: {type(e).__name__}: {e}"}
        stdout.write(json.dumps(out) + "\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
