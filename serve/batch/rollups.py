"""Roll-ups of a batch job's predictions, per conversation, sender and shop, and the report's counts.

They are built one record batch at a time, so memory follows the number of
conversations, senders and shops, not the number of messages. Each batch is
aggregated into partial tables that merge with the partials so far: counts and
sums add, maxima and minima take the larger and smaller, the triggering message is
the one with the highest extortion probability (ties: the lower row), and distinct
counts keep their distinct pairs until the end.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

THREATS = ("extortion", "coercion")  # the labels that make a conversation, sender or shop worth a look
# The columns read from predictions.parquet: no text, and only the probabilities used.
COLUMNS = ["file", "row", "message_id", "conversation_id", "sender_id", "shop_id", "time", "label", "p_extortion", "p_coercion"]
HISTOGRAM_EDGES = np.linspace(0, 1, 51)
BATCH_ROWS = 100_000
_KEEP_NULLS = pc.ScalarAggregateOptions(skip_nulls=False)

# (column, function, name) of each aggregation: first over messages, then over partial results.
CONVERSATION = [
    ("message_id", "count", "messages", "sum"),
    ("p_extortion", "max", "max_p_extortion", "max"),
    ("message_id", "first", "trigger_message_id", "first"),
    ("file", "first", "trigger_file", "first"),
    ("row", "first", "trigger_row", "first"),
    ("label", "first", "trigger_label", "first"),
    ("shop_id", "first", "shop_id", "first"),
    ("is_extortion", "sum", "extortion_messages", "sum"),
    ("is_coercion", "sum", "coercion_messages", "sum"),
    ("time", "min", "first_time", "min"),
    ("time", "max", "last_time", "max"),
]
TOTALS = [
    ("message_id", "count", "messages", "sum"),
    ("is_extortion", "sum", "extortion_messages", "sum"),
    ("is_coercion", "sum", "coercion_messages", "sum"),
    ("p_extortion", "max", "max_p_extortion", "max"),
]
TIMES = [("time", "min", "first_time", "min"), ("time", "max", "last_time", "max")]
THREAT_TIMES = [("time", "min", "first_threat_time", "min"), ("time", "max", "last_threat_time", "max")]


def _aggregate(table: pa.Table, keys: list[str], aggregations: list[tuple], merging: bool) -> pa.Table:
    """``table`` grouped by ``keys``; over messages, or (``merging``) over partial results named as the output."""
    pairs = [(name, merge) if merging else (column, function) for column, function, name, merge in aggregations]
    # One thread keeps the row order, which "first" relies on; "first" keeps nulls, so that every
    # trigger field comes from the same row.
    grouped = table.group_by(keys, use_threads=False).aggregate(
        [(column, function, _KEEP_NULLS) if function == "first" else (column, function) for column, function in pairs]
    )
    return grouped.select([*keys, *[f"{column}_{function}" for column, function in pairs]]).rename_columns(
        [*keys, *[name for _, _, name, _ in aggregations]]
    )


def _merge(so_far: pa.Table | None, partial: pa.Table, keys: list[str], aggregations: list[tuple], order=None) -> pa.Table:
    if so_far is None:
        return partial
    table = pa.concat_tables([so_far, partial])
    if order:
        table = table.sort_by(order)
    return _aggregate(table, keys, aggregations, merging=True)


def _distinct(table: pa.Table, keys: list[str]) -> pa.Table:
    return _aggregate(table, keys, [], merging=False)


class Rollups:
    """Feed record batches of predictions with :meth:`add`; read :meth:`tables`, :meth:`labels_per_day`, ``histograms`` and
    ``label_counts``."""

    def __init__(self):
        self._conversations = self._sender_totals = self._shop_totals = None
        self._sender_threat_shops = self._shop_threat_senders = self._shop_threat_conversations = None
        self._per_day = None
        self.histograms = {label: np.zeros(len(HISTOGRAM_EDGES) - 1, dtype=np.int64) for label in THREATS}
        self.label_counts: Counter = Counter()

    @classmethod
    def of_file(cls, path, batch_rows: int = BATCH_ROWS) -> Rollups:
        rollups, predictions = cls(), pq.ParquetFile(path)
        for batch in predictions.iter_batches(batch_size=batch_rows, columns=COLUMNS):
            rollups.add(pa.Table.from_batches([batch]))
        if rollups._conversations is None:  # no predictions at all: empty tables, not none
            rollups.add(predictions.schema_arrow.empty_table().select(COLUMNS))
        return rollups

    def add(self, batch: pa.Table) -> None:
        batch = batch.append_column("threat", pc.is_in(batch["label"], pa.array(THREATS)))
        batch = batch.append_column("is_extortion", pc.equal(batch["label"], "extortion"))
        batch = batch.append_column("is_coercion", pc.equal(batch["label"], "coercion"))
        self._add_conversations(batch.filter(pc.is_valid(batch["conversation_id"])))
        self._add_senders(batch.filter(pc.is_valid(batch["sender_id"])))
        self._add_shops(batch.filter(pc.is_valid(batch["shop_id"])))
        self._add_report_counts(batch)

    def _add_conversations(self, batch: pa.Table) -> None:
        keys = ["conversation_id"]
        ordered = batch.sort_by([("conversation_id", "ascending"), ("p_extortion", "descending"), ("row", "ascending")])
        partial = _aggregate(ordered, keys, CONVERSATION, merging=False)
        order = [("conversation_id", "ascending"), ("max_p_extortion", "descending"), ("trigger_row", "ascending")]
        self._conversations = _merge(self._conversations, partial, keys, CONVERSATION, order)

    def _add_senders(self, batch: pa.Table) -> None:
        keys = ["sender_id"]
        totals = TOTALS + TIMES
        self._sender_totals = _merge(self._sender_totals, _aggregate(batch, keys, totals, merging=False), keys, totals)
        # Shops threatened, with the first and last threat; rows without a shop count for the times only.
        pair = ["sender_id", "shop_id"]
        threats = _aggregate(batch.filter(batch["threat"]), pair, THREAT_TIMES, merging=False)
        self._sender_threat_shops = _merge(self._sender_threat_shops, threats, pair, THREAT_TIMES)

    def _add_shops(self, batch: pa.Table) -> None:
        keys = ["shop_id"]
        self._shop_totals = _merge(self._shop_totals, _aggregate(batch, keys, TOTALS, merging=False), keys, TOTALS)
        threats = batch.filter(batch["threat"])
        senders, conversations = ["shop_id", "sender_id"], ["shop_id", "conversation_id"]
        self._shop_threat_senders = _merge(self._shop_threat_senders, _distinct(threats, senders), senders, [])
        self._shop_threat_conversations = _merge(self._shop_threat_conversations, _distinct(threats, conversations), conversations, [])

    def _add_report_counts(self, batch: pa.Table) -> None:
        for label in THREATS:
            values = batch[f"p_{label}"].to_numpy(zero_copy_only=False)
            self.histograms[label] += np.histogram(values, bins=HISTOGRAM_EDGES)[0]
        self.label_counts.update({row["values"]: row["counts"] for row in pc.value_counts(batch["label"]).to_pylist()})
        dated = batch.filter(pc.is_valid(batch["time"]))
        days = pa.table({"day": pc.strftime(dated["time"], format="%Y-%m-%d"), "label": dated["label"]})
        per_day = [("label", "count", "label_count", "sum")]
        self._per_day = _merge(self._per_day, _aggregate(days, ["day", "label"], per_day, merging=False), ["day", "label"], per_day)

    def labels_per_day(self) -> pa.Table:
        """Messages per day and label (columns ``day``, ``label``, ``label_count``), for messages with a time."""
        if self._per_day is None:
            return pa.table({"day": pa.array([], pa.string()), "label": pa.array([], pa.string()), "label_count": pa.array([], pa.int64())})
        return self._per_day.sort_by([("day", "ascending"), ("label", "ascending")])

    def tables(self) -> dict[str, pa.Table]:
        """The conversations, senders and shops tables, each in the order a reviewer reads it."""
        return {"conversations": self._conversation_table(), "senders": self._sender_table(), "shops": self._shop_table()}

    def _conversation_table(self) -> pa.Table:
        grouped = self._conversations
        top = pc.if_else(
            pc.greater(grouped["extortion_messages"], 0),
            "extortion",
            pc.if_else(pc.greater(grouped["coercion_messages"], 0), "coercion", grouped["trigger_label"]),
        )
        grouped = grouped.append_column("top_label", top)
        return grouped.sort_by([("max_p_extortion", "descending"), ("conversation_id", "ascending")])

    def _sender_table(self) -> pa.Table:
        shops = _aggregate(
            self._sender_threat_shops,
            ["sender_id"],
            [
                ("shop_id", "count_distinct", "shops_with_threats", None),
                ("first_threat_time", "min", "first_threat_time", None),
                ("last_threat_time", "max", "last_threat_time", None),
            ],
            merging=False,
        )
        joined = _fill_zero(self._sender_totals.join(shops, "sender_id", join_type="left outer"), ["shops_with_threats"])
        return joined.sort_by([("shops_with_threats", "descending"), ("extortion_messages", "descending"), ("sender_id", "ascending")])

    def _shop_table(self) -> pa.Table:
        senders = _aggregate(
            self._shop_threat_senders, ["shop_id"], [("sender_id", "count_distinct", "threatening_senders", None)], merging=False
        )
        conversations = _aggregate(
            self._shop_threat_conversations,
            ["shop_id"],
            [("conversation_id", "count_distinct", "threatening_conversations", None)],
            merging=False,
        )
        joined = self._shop_totals.join(senders, "shop_id", join_type="left outer").join(conversations, "shop_id", join_type="left outer")
        joined = _fill_zero(joined, ["threatening_senders", "threatening_conversations"])
        return joined.sort_by([("extortion_messages", "descending"), ("shop_id", "ascending")])


def _fill_zero(table: pa.Table, names: list[str]) -> pa.Table:
    """Counts a left join left empty are zero."""
    for name in names:
        table = table.set_column(table.schema.get_field_index(name), name, pc.fill_null(table[name], 0))
    return table
