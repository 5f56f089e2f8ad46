"""/inspect's request and response bodies (pydantic); limits from the validation context."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from model.inspect import WHAT
from service.core.schemas import Strict, setting_limit

Quantity = Literal["h", "c", "i", "f", "g", "o"]
DEFAULT_TOP_UNITS = 8


class InspectRequest(Strict):
    model: str | None = Field(None, description="a served model's id (GET /v1/models); absent = the default model")
    text: str = Field(min_length=1, description="the text to read, from the model's start state; longer than "
                      "max_context (see /info): read from its last max_context characters, as /predict-next does "
                      "(at most max_inspect_chars)")
    layer: int | None = Field(None, description="LSTM layer, 0-based (negative counts from the last); null = the last")
    units: list[int] | None = Field(None, description="units (0 .. hidden-1) whose activations to return (at most "
                                    "max_inspect_units)")
    top_units: int | None = Field(None, ge=1, description="also the k units whose cell state varies most over the "
                                  f"text (at most max_inspect_units); with neither units nor top_units: "
                                  f"{DEFAULT_TOP_UNITS}")
    what: list[Quantity] = Field(default_factory=lambda: list(WHAT), min_length=1, description="which activations: "
                                 "h (hidden state), c (cell state), i, f, g, o (input, forget, cell candidate and "
                                 "output gates: i, f, o in [0, 1], g and h in [-1, 1])")
    unknown_chars: Literal["error", "skip"] = Field("error", description="characters outside the vocabulary: 422, "
                                                    "or drop them")

    @field_validator("text")
    @classmethod
    def _text(cls, v: str, info: ValidationInfo):
        lim = setting_limit(info, "max_inspect_chars")
        if lim is not None and len(v) > lim:
            raise ValueError(f"is {len(v)} characters; the limit is {lim} (max_inspect_chars)")
        return v

    @field_validator("units", mode="before")
    @classmethod
    def _integral_units(cls, v):
        # JSON Schema's "integer" includes 10.0 (see Strict): in the list of units too
        return [int(x) if isinstance(x, float) and x.is_integer() else x for x in v] if isinstance(v, list) else v

    @field_validator("units")
    @classmethod
    def _units(cls, v, info: ValidationInfo):
        if v is not None:
            if any(u < 0 for u in v):
                raise ValueError("units are >= 0")
            if len(set(v)) != len(v):
                raise ValueError("units must not repeat")
            _count(len(v), info)
        return v

    @field_validator("top_units")
    @classmethod
    def _top(cls, v, info: ValidationInfo):
        if v is not None:
            _count(v, info)
        return v

    @field_validator("what")
    @classmethod
    def _what(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("must not repeat")
        return v


def _count(n: int, info: ValidationInfo):
    lim = setting_limit(info, "max_inspect_units")
    if lim is not None and n > lim:
        raise ValueError(f"{n} units asked for; the limit is {lim} (max_inspect_units)")


class InspectChar(BaseModel):
    char: str = Field(description="the character read")
    prob: float = Field(description="the model's probability of it, given the characters before it (the first: "
                        "given the start state); low = a surprise")
    logprob: float = Field(description="natural log of prob")
    h: list[float] | None = Field(None, description="hidden state after reading it, one value per unit of `units`")
    c: list[float] | None = Field(None, description="cell state after reading it, per unit")
    i: list[float] | None = Field(None, description="input gate while reading it, per unit")
    f: list[float] | None = Field(None, description="forget gate, per unit")
    g: list[float] | None = Field(None, description="cell candidate, per unit")
    o: list[float] | None = Field(None, description="output gate, per unit")


class UnitStat(BaseModel):
    unit: int = Field(description="a unit of the layer")
    c_std: float = Field(description="standard deviation of its cell state over the text")


class InspectResponse(BaseModel):
    text: str = Field(description="the characters read (after any skipped or cut off)")
    start: int = Field(description="where reading started in the sent text (after skipped characters): 0, or "
                       "len - max_context for a text longer than max_context")
    cell: str = Field(description="the model's recurrent cell")
    layer: int = Field(description="the layer shown (0-based)")
    hidden: int = Field(description="units in the layer")
    units: list[int] = Field(description="the units each activation list follows: the requested ones, then the top ones")
    top_units: list[UnitStat] = Field(description="with top_units: the units whose cell state varies most, most first")
    chars: list[InspectChar] = Field(description="one entry per character read")
