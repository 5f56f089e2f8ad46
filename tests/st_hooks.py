"""schemathesis hooks for tests/test_schema.py (loaded through SCHEMATHESIS_HOOKS).

Every rule JSON Schema can state is in the document, and this hook leaves those to it. One rule is
beyond JSON Schema, and `regex`'s description states it in words (service/core/schemas.py
REGEX_RULE): the server compiles the regex over the chosen model's characters, less those
logit_bias bans (and its unknown symbol, if any), and refuses one that is not a valid Python regex,
uses a construct the matcher lacks, is too complex (automaton states, compile time), or that no
non-empty text of those characters matches. Whether a string passes depends on the vocabulary, on
another field and on the size of an automaton: no pattern or format can say it (even a regex grammar
narrowed to what a pattern can describe still admits (a|b)*a(a|b){12}-like blow-ups within 500
characters), and schemathesis counts any 4xx to a schema-valid request as a failure, documented or
not (positive_data_acceptance's expected statuses).

So a regex the schema allows is checked against that rule, by the server's own compiler (same
state and time limits) over the cards in the models directory the server reads (CHARRNN_MODELS_DIR;
the default model: CHARRNN_WEIGHTS), and only a regex that breaks it is replaced, by the class of
the characters left. A regex that breaks the schema (not a string, empty, too long) stays, for the
negative cases, as does one under a model that is not served (that answers 404 first).
map_case, not map_body: it runs in every phase, the coverage phase's boundary values included."""
import json
import os
from pathlib import Path

import schemathesis
from hypothesis.internal import lambda_sources

from service.core.features import FeatureError, RegexCompiler

# CPython 3.11 before 3.11.8 can raise SystemError("AST constructor recursion depth mismatch") from
# ast.parse in a threaded program (python/cpython#106905). Hypothesis parses a lambda's source only
# to describe it in a strategy's repr, which it builds while validating recursive strategies (here:
# free-form JSON objects), so the interpreter bug failed whole runs at random. A description that
# cannot be parsed is hypothesis's own "<unknown>" case; the generated requests are the same.
# A private function: where a hypothesis release renames it, nothing is patched (and nothing breaks).
_describe = getattr(lambda_sources, "_lambda_description", None)


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


if _describe is not None:
    lambda_sources._lambda_description = _lambda_description

MODELS = Path(os.environ["CHARRNN_MODELS_DIR"])
DEFAULT = Path(os.environ["CHARRNN_WEIGHTS"]).name
CARDS = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in MODELS.glob("*.json")
         if p.with_suffix(".safetensors").exists()}
COMPILER = RegexCompiler()


def _banned(body: dict, card: dict, by_index: bool) -> frozenset[int]:
    """The vocabulary indices banned: those the request's logit_bias sets to -100 (keys: characters, or
    under /v1 indices), and the model's unknown symbol, which is never generated."""
    chars, bias = card["vocab"], body.get("logit_bias")
    keys = {str(i) if by_index else c: i for i, c in enumerate(chars)}
    return frozenset([keys[k] for k, b in (bias.items() if isinstance(bias, dict) else ())
                      if k in keys and isinstance(b, (int, float)) and not isinstance(b, bool) and b <= -100] +
                     [i for i, c in enumerate(chars) if c == card.get("unknown")])


def _char_class(chars: list[str]) -> str:
    return "[" + "".join("\\n" if c == "\n" else "\\" + c if c in "\\]^-[" else c for c in chars) + "]+"


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("regex"), str) or not 1 <= len(body["regex"]) <= 500:
        return case
    name = DEFAULT if body.get("model") is None else body["model"]
    card = CARDS.get(name) if isinstance(name, str) else None
    if card is None:
        return case
    chars = card["vocab"]
    banned = _banned(body, card, by_index=case.operation.path.startswith("/v1/"))
    try:
        COMPILER.compile(body["regex"], chars, banned)
    except FeatureError:  # the documented rule refuses it: a regex that keeps the rule instead
        case.body = {**body, "regex": _char_class([c for i, c in enumerate(chars) if i not in banned])}
    return case
