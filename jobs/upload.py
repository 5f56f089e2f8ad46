"""What an uploaded training file must be, checked before it is stored: each failure says what and
where, as a status, a code and a message (the HTTP layer renders it).

A file is plain UTF-8 text (what char-rnn users have). A .jsonl file, or one whose every line is a
JSON object with "text" or with "prompt" and "completion", is read as the concatenation of those
(prompt + completion per record, records one after another, each ending with a newline).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from model.data import TRAIN_FRACTION


class UploadError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str = "file"):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


@dataclass
class Checked:
    text: str
    format: str          # "text" | "jsonl"
    chars: int
    distinct_chars: int
    sha256: str


def _jsonl_text(lines: list[str]) -> str | None:
    """The records' text when every non-empty line is a JSON object of the accepted shapes, else None."""
    parts = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if not isinstance(rec, dict):
            return None
        if isinstance(rec.get("text"), str):
            piece = rec["text"]
        elif isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str):
            piece = rec["prompt"] + rec["completion"]
        else:
            return None
        parts.append(piece if piece.endswith("\n") else piece + "\n")
    return "".join(parts) if parts else None


def check(data: bytes, filename: str, *, max_bytes: int, min_chars: int, max_distinct: int) -> Checked:
    if len(data) > max_bytes:
        raise UploadError(413, "file_too_large", f"the file is {len(data)} bytes; the limit is {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UploadError(400, "invalid_utf8", f"the file is not UTF-8 text: invalid byte 0x{data[e.start]:02x} at "
                          f"byte offset {e.start}") from None
    bom = text.startswith("\ufeff")
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the text (but counts as sent)
    fmt = "text"
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if filename.lower().endswith(".jsonl") or first.lstrip().startswith("{"):
        records = _jsonl_text(text.splitlines())
        if records is not None:
            text, fmt = records, "jsonl"
        elif filename.lower().endswith(".jsonl"):
            raise UploadError(400, "invalid_jsonl", "a .jsonl file must hold one JSON object per line, each with "
                              "\"text\" or with \"prompt\" and \"completion\" (strings)")
    if len(text) + (bom and fmt == "text") < min_chars:
        val = len(text) - int(len(text) * TRAIN_FRACTION)
        raise UploadError(400, "file_too_small", f"the file has {len(text)} characters; at least {min_chars} are "
                          f"needed so that its last 10% (here {val}) can hold a validation split")
    distinct = len(set(text))
    if distinct > max_distinct:
        raise UploadError(400, "too_many_characters", f"the file has {distinct} distinct characters; the limit is "
                          f"{max_distinct} (a job's hyperparameters.max_vocab caps the model's own vocabulary)")
    return Checked(text, fmt, len(text), distinct, hashlib.sha256(data).hexdigest())
