"""Reading request traces: when each request arrived, and its token counts when the trace has them.

`read_trace(path, fmt, time_scale)` reads a CSV or JSONL file (JSONL when its first non-blank line
starts with `{`) in one of three column layouts:

- `enova`: `timestamp` in seconds from the start of the run, as written (must be >= 0); optional
  `input_tokens`, `output_tokens`.
- `azure`, the public Azure LLM inference traces (AzurePublicDataset, 2023 and 2024):
  `TIMESTAMP` (a date-time such as `2023-11-16 18:15:46.6805900`), `ContextTokens`,
  `GeneratedTokens`. Times are offsets from the earliest row.
- `burstgpt`, the BurstGPT traces: `Timestamp` (seconds), `Model`, `Request tokens`,
  `Response tokens`, `Total tokens`, `Log Type` (newer files add `Session ID`, `Elapsed time`);
  only `Timestamp`, `Request tokens` and `Response tokens` are read. Times are offsets from the
  earliest row.

`auto` picks the layout by the header (the JSONL keys of the first row). A token count of 0 is read
as unknown (None): BurstGPT records its failed requests with 0 response tokens, and a request
cannot ask for 0. Rows out of order are sorted by time (stably), then numbered 0..n-1; a time
scale of 2 replays twice as fast. The whole trace is returned: cutting it to a run's duration is
`arrivals.schedule`'s job. Called by `enova.inject.arrivals`; reads the file and nothing else.

Raises UsageError naming `file:line` for a bad row, and for a missing, unreadable or empty file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from enova.errors import UsageError
from enova.inject.model import Arrival

FORMATS = ("enova", "azure", "burstgpt")


@dataclass(frozen=True)
class _Layout:
    """A trace layout: its time column, how a time is read, its token columns, whether times are kept
    as written (enova) or made offsets from the earliest row."""

    name: str
    time: str
    parse_time: Callable[[str, Any], float]
    input_tokens: str
    output_tokens: str
    tokens_required: bool
    relative: bool

    @property
    def required(self) -> tuple[str, ...]:
        return (self.time, self.input_tokens, self.output_tokens) if self.tokens_required else (self.time,)


def _seconds(column: str, value: Any) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"{column} must be a number of seconds (got {value!r})")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column} must be a number of seconds (got {value!r})") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{column} must be a finite number of seconds (got {value!r})")
    return seconds


_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?")


def _date_time(column: str, value: Any) -> float:
    """Seconds since the epoch of an ISO date-time with any number of fractional digits (Azure's
    have seven); one without a zone is read as UTC."""
    match = _DATE_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{column} must be a date-time such as 2023-11-16 18:15:46.6805900 (got {value!r})")
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        moment = datetime.fromisoformat(whole.replace(" ", "T") + zone)
    except ValueError as error:
        raise ValueError(f"{column} is not a valid date-time: {error} (got {value!r})") from None
    return moment.astimezone(timezone.utc).timestamp() + (float("0." + fraction) if fraction else 0.0)


_LAYOUTS = {
    "azure": _Layout("azure", "TIMESTAMP", _date_time, "ContextTokens", "GeneratedTokens", True, True),
    "burstgpt": _Layout("burstgpt", "Timestamp", _seconds, "Request tokens", "Response tokens", True, True),
    "enova": _Layout("enova", "timestamp", _seconds, "input_tokens", "output_tokens", False, False),
}
_EXPECTED = ("a header with timestamp[,input_tokens,output_tokens] (enova), "
             "TIMESTAMP,ContextTokens,GeneratedTokens (Azure) or Timestamp,Model,Request tokens,Response tokens,... "
             "(BurstGPT)")


def read_trace(path: Path, fmt: str = "auto", time_scale: float = 1.0) -> list[Arrival]:
    """Every request of the trace at `path`, sorted by time, indices 0..n-1, times divided by
    `time_scale`. `fmt`: auto, enova, azure or burstgpt. Pure but for reading the file.

    Raises UsageError for a missing or unreadable file, an unknown layout, a bad row (naming its
    file:line and column) and a trace without rows."""
    shown = _shown(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise UsageError(f"{shown}: unknown trace format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    if not time_scale > 0 or not math.isfinite(time_scale):
        raise UsageError(f"{shown}: time_scale must be a number > 0 (got {time_scale!r})")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such trace file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{shown}: cannot read the trace: {error}") from None

    first_line = next((line for line in text.splitlines() if line.strip()), "")
    rows = _jsonl_rows(text, shown) if first_line.lstrip().startswith("{") else _csv_rows(text, shown)
    header_line, header = next(rows, (1, None))
    if header is None:
        raise UsageError(f"{shown}: the trace is empty")
    layout = _layout(fmt, header, shown, header_line)

    times: list[float] = []
    tokens: list[tuple[int | None, int | None]] = []
    for line, row in rows:
        try:
            times.append(layout.parse_time(layout.time, row.get(layout.time)))
            tokens.append((_tokens(layout.input_tokens, row.get(layout.input_tokens)),
                           _tokens(layout.output_tokens, row.get(layout.output_tokens))))
        except ValueError as error:
            raise UsageError(f"{shown}:{line}: {error}") from None
        if not layout.relative and times[-1] < 0:
            raise UsageError(f"{shown}:{line}: {layout.time} must be >= 0 seconds from the start (got {times[-1]:g})")
    if not times:
        raise UsageError(f"{shown}: the trace has a header but no requests")

    start = min(times) if layout.relative else 0.0
    order = sorted(range(len(times)), key=times.__getitem__)
    return [Arrival(index, (times[i] - start) / time_scale, *tokens[i]) for index, i in enumerate(order)]


def _layout(fmt: str, header: dict[str, Any], shown: str, line: int) -> _Layout:
    columns = set(header)
    if fmt != "auto":
        layout = _LAYOUTS[fmt]
        missing = [column for column in layout.required if column not in columns]
        if missing:
            raise UsageError(f"{shown}:{line}: the {fmt} layout needs column {', '.join(missing)} "
                             f"(columns: {', '.join(header) or 'none'})")
        return layout
    for layout in _LAYOUTS.values():  # the most specific first: azure and burstgpt need their token columns
        if all(column in columns for column in layout.required):
            return layout
    raise UsageError(f"{shown}:{line}: unknown trace layout (columns: {', '.join(header) or 'none'}); "
                     f"expected {_EXPECTED}")


def _tokens(column: str, value: Any) -> int | None:
    """A token count; None when absent, empty or 0."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{column} must be a whole number of tokens (got {value!r})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column} must be a whole number of tokens (got {value!r})") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{column} must be a whole number of tokens >= 0 (got {value!r})")
    return int(number) or None


def _csv_rows(text: str, shown: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) for each record: first the header, as a row mapping each column to itself."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                yield reader.line_num, {column: column for column in header}
                continue
            if len(record) != len(header):
                raise UsageError(f"{shown}:{reader.line_num}: {len(record)} columns where the header has {len(header)}")
            yield reader.line_num, {column: cell.strip() for column, cell in zip(header, record)}
    except csv.Error as error:
        raise UsageError(f"{shown}:{reader.line_num}: not valid CSV: {error}") from None


def _jsonl_rows(text: str, shown: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) for each JSON object: first the keys of the first object, as a header."""
    first = True
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{shown}:{number}: not valid JSON: {error.msg}") from None
        if not isinstance(row, dict):
            raise UsageError(f"{shown}:{number}: each line must be a JSON object (got {type(row).__name__})")
        if first:
            first = False
            yield number, {key: key for key in row}
        yield number, row


def _shown(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when under it."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)
