"""The database-time-by-namespace table against a real SecantusDB's ``top``."""

from __future__ import annotations

from pymongo import MongoClient

from roomcast.load.dbtop import read_top, top_table, top_table_text, try_read_top


def test_top_splits_the_window_by_namespace(mongo_url: str, mongo_db_name: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(mongo_url)
    db = client[mongo_db_name]
    db.idle.insert_one({"before": True})  # only before the window: no row
    # top lists existing collections only: one read in the window is its whole row
    db.light.insert_one({"x": 1})
    before = read_top(mongo_url)
    for i in range(30):
        db.busy.insert_one({"i": i})
    db.light.find_one({"x": 1})
    after = read_top(mongo_url)
    client.close()

    table = top_table(before, after, acked=10)
    rows = {row["namespace"]: row for row in table["rows"]}
    busy, light = rows[f"{mongo_db_name}.busy"], rows[f"{mongo_db_name}.light"]
    assert f"{mongo_db_name}.idle" not in rows
    assert busy["commands"] == 30
    assert busy["busiest"] == "insert"
    assert busy["busiest_commands"] == 30
    assert light["commands"] == 1
    assert light["busiest"] == "queries"
    assert table["rows"][0]["namespace"] == f"{mongo_db_name}.busy"  # busiest first
    assert abs(busy["ms_per_msg"] - busy["time_ms"] / 10) < 0.01
    assert abs(sum(row["share_pct"] for row in table["rows"]) - 100) < 1
    assert f"| {mongo_db_name}.busy | 30 |" in top_table_text(table)


def test_an_unreachable_database_gives_a_reason_not_a_failure() -> None:
    reading = try_read_top("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")
    assert isinstance(reading, str)
    assert reading.startswith("top unavailable")
    table = top_table(reading, {}, acked=5)
    assert table["rows"] == []
    assert top_table_text(table).startswith("database time by namespace: top unavailable")
