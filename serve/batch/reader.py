"""Read chat logs row by row from JSON Lines (plain or gzip), CSV or Parquet files.

Every physical row comes out either as a :class:`ChatRow` or as an :class:`ErrorRow`
with its file, row number and the reason, so that nothing is lost on the way.
Row numbers count from 1: lines of a JSON Lines file (blank lines are skipped but
counted), data rows of a CSV file (the header is row 0), rows of a Parquet file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from model.data_format import Turn, message_from_json
from model.labels import canonical_role

# The row's keys, carried into the predictions as given. order_id: the order a message is about; order_account_id: the
# account that placed (and could review) that order, which in a gang need not be the account that bargains.
KEYS = ("message_id", "conversation_id", "sender_id", "sender_role", "shop_id", "order_id", "order_account_id")
FIELDS = (*KEYS, "ts", "text")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class ChatRow:
    """One message of a chat log, with its place in the input."""

    file: str
    row: int
    text: str
    message_id: str | None = None
    conversation_id: str | None = None
    sender_id: str | None = None
    sender_role: str | None = None
    shop_id: str | None = None
    ts: str | None = None
    time: datetime | None = None
    context: tuple[Turn, ...] | None = None  # given in the row (annotation format); else built from the conversation
    order_id: str | None = None
    order_account_id: str | None = None


@dataclass
class ErrorRow:
    """A row that could not be scored."""

    file: str
    row: int
    reason: str
    message_id: str | None = None

    def to_json(self) -> dict:
        return {"file": self.file, "row": self.row, "message_id": self.message_id, "reason": self.reason}


def file_format(path: Path) -> str | None:
    """``jsonl``, ``csv`` or ``parquet`` from the name (a ``.gz`` suffix allowed for text formats), else None."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    fmt = FORMATS.get(Path(name.removesuffix(".gz")).suffix)
    return None if gzipped and fmt == "parquet" else fmt


def input_files(paths: list[str]) -> list[Path]:
    """The files named, and the readable files inside named folders (sorted); a clear error otherwise."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and file_format(p) and not p.name.startswith("."))
            if not found:
                raise ValueError(f"{name}: folder holds no .jsonl, .csv or .parquet files (optionally .gz)")
            files += found
        elif path.is_file():
            if file_format(path) is None:
                raise ValueError(f"{name}: unknown format; expected .jsonl, .json, .csv (optionally .gz) or .parquet")
            files.append(path)
        else:
            raise ValueError(f"{name}: no such file or folder")
    return files


def parse_columns(spec: str | None) -> dict[str, str]:
    """``text=content,message_id=msg_id`` as {our field: the input's column}."""
    columns: dict[str, str] = {}
    for item in filter(None, (spec or "").split(",")):
        ours, _, theirs = item.partition("=")
        ours, theirs = ours.strip(), theirs.strip()
        if ours not in FIELDS or not theirs:
            raise ValueError(f"{item!r} should be FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}")
        columns[ours] = theirs
    return columns


# What a damaged or vanished file raises part-way: a truncated or corrupt gzip stream, an I/O error, a broken Parquet file.
UNREADABLE = (EOFError, OSError, zlib.error, pa.ArrowInvalid)


def read_file(path: Path, columns: dict[str, str] | None = None) -> Iterator[ChatRow | ErrorRow]:
    """The rows of one file, in file order; a file that cannot be read to its end ends with one error row saying where."""
    fmt = file_format(path)
    records = {"jsonl": _jsonl_records, "csv": _csv_records, "parquet": _parquet_records}[fmt](path)
    row = 0
    try:
        for row, record in records:
            yield record if isinstance(record, ErrorRow) else to_chat_row(record, str(path), row, columns or {})
    except UNREADABLE as error:
        yield ErrorRow(str(path), row + 1, f"the file cannot be read past row {row}: {type(error).__name__}: {error}")


def count_rows(path: Path) -> int:
    """Rows in a file, cheaply (Parquet metadata, or counting lines), for progress estimates."""
    fmt = file_format(path)
    lines = 0
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with _open_text(path) as handle:
            for line in handle:
                lines += bool(line.strip())
    except UNREADABLE:  # read_file reports it; the estimate counts what could be read
        pass
    return max(lines - 1, 0) if fmt == "csv" else lines


def _open_text(path: Path) -> io.TextIOBase:
    # surrogateescape keeps undecodable bytes as lone surrogates, which to_chat_row turns into error rows;
    # "replace" would score them as text.
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # -sig: a byte order mark is dropped


def _jsonl_records(path: Path):
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, ErrorRow(str(path), number, f"not valid JSON: {error.msg} at column {error.colno}")
                continue
            except RecursionError:
                yield number, ErrorRow(str(path), number, "not valid JSON here: nested too deeply")
                continue
            if not isinstance(record, dict):
                yield number, ErrorRow(str(path), number, f"expected a JSON object, got {type(record).__name__}")
                continue
            yield number, record


_EXTRA_FIELDS = "\0extra"
# Zero-width and bidirectional format characters, the soft hyphen and the byte order mark: a text of only these is empty.
_INVISIBLE = dict.fromkeys([0x00AD, 0x180E, 0xFEFF, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070)])


def _csv_records(path: Path):
    # The csv module rather than pyarrow's reader: a malformed row must become an error row with its number.
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, restkey=_EXTRA_FIELDS, strict=True)  # strict: broken quoting is an error, not text
        number = 0
        while True:
            number += 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a quote never closed: the rest of the file was swallowed into one field
                yield number, ErrorRow(str(path), number, f"broken CSV quoting: {error}")
                continue
            if _EXTRA_FIELDS in record:
                fields = len(reader.fieldnames) + len(record[_EXTRA_FIELDS])
                yield number, ErrorRow(str(path), number, f"row has {fields} fields, the header {len(reader.fieldnames)}")
            elif None in record.values():
                yield number, ErrorRow(str(path), number, f"row has fewer fields than the header's {len(reader.fieldnames)}")
            else:
                yield number, record


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            number += 1
            yield number, record


def to_chat_row(record: dict, file: str, row: int, columns: dict[str, str]) -> ChatRow | ErrorRow:
    """Validate one record (chat-log fields, renamed by ``columns``, or the annotation format)."""

    def get(field: str):
        return record.get(columns.get(field, field))

    message_id = _printable(_as_key(get("message_id") if get("message_id") is not None else record.get("id")))
    text = get("text")
    if text is None:
        return ErrorRow(file, row, f"no {columns.get('text', 'text')!r} field", message_id)
    if not isinstance(text, str):
        return ErrorRow(file, row, f"text is {type(text).__name__}, not a string", message_id)
    if not text.translate(_INVISIBLE).strip():
        return ErrorRow(file, row, "text is empty or whitespace only (invisible format characters not counted)", message_id)
    if (field := _field_not_utf8(record)) is not None:
        return ErrorRow(file, row, f"field {field!r} is not valid UTF-8 (undecodable bytes or a lone surrogate)", message_id)
    raw_role = get("sender_role") if get("sender_role") is not None else record.get("role")
    role = None
    if raw_role not in (None, ""):
        role = canonical_role(raw_role)
        if role is None:
            return ErrorRow(file, row, f"sender_role {str(raw_role)[:20]!r} is not buyer or seller", message_id)
    context = None
    if record.get("context") is not None:  # the annotation format carries its own turns
        try:
            context = message_from_json({"text": text, "context": record["context"]}).context
        except ValueError as error:
            return ErrorRow(file, row, str(error), message_id)
    ts = get("ts")
    return ChatRow(
        file,
        row,
        text,
        message_id,
        _as_key(get("conversation_id")),
        _as_key(get("sender_id")),
        role,
        _as_key(get("shop_id")),
        None if ts in (None, "") else str(ts),
        parse_time(ts),
        context,
        _as_key(get("order_id")),
        _as_key(get("order_account_id")),
    )


def _field_not_utf8(record: dict) -> str | None:
    """The first field that cannot be written as UTF-8: bytes the file could not decode, or an escaped lone surrogate."""
    for key, value in record.items():
        try:
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            return _printable(str(key))
    return None


def _printable(value: str | None) -> str | None:
    """The value with any undecodable bytes written as escapes, so that an error row can name it."""
    return None if value is None else value.encode("utf-8", "backslashreplace").decode("utf-8")


def _as_key(value) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_time(value) -> datetime | None:
    """A UTC time from epoch seconds or milliseconds, an ISO 8601 string or a datetime; None when unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    try:
        if number is not None:
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, tz=UTC)
        parsed = datetime.fromisoformat(str(value).strip())
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
