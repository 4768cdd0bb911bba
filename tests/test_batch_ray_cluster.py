"""The Ray engine on a simulated cluster of two nodes: every row is accounted for, and it gives the local engine's
predictions and roll-ups on conversations of every length from 1 to 12 turns."""

import json
import random

import pyarrow.parquet as pq
import pytest

from serve.batch import BatchConfig, run_batch
from serve.cases import CaseSettings, run_cases
from tests.test_batch import TEXTS, write_jsonl

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def conversations_of_every_length(longest: int = 12, seed: int = 0) -> list[dict]:
    """One conversation of each length from 1 to ``longest`` turns, interleaved in time, rows shuffled."""
    rows = []
    for length in range(1, longest + 1):
        for turn in range(length):
            buyer = turn % 2 == 0
            rows.append(
                {
                    "message_id": f"c{length}-t{turn}",
                    "conversation_id": f"c{length}",
                    "sender_id": f"u{length}" if buyer else f"s{length % 3}",
                    "sender_role": "buyer" if buyer else "seller",
                    "shop_id": f"shop{length % 3}",
                    "order_id": f"o{length}",
                    "order_account_id": f"u{(length + 1) // 2}",  # two conversations' buyers share each order's account
                    "ts": 1_764_000_000 + 600 * turn + length,
                    "text": f"{TEXTS[(length + turn) % len(TEXTS)]} {length}-{turn}",
                }
            )
    random.Random(seed).shuffle(rows)
    return rows


def test_two_nodes_give_the_local_engines_outputs(two_nodes, tiny_model_dir, tmp_path):
    from serve.batch.ray_engine import nodes_not_seeing

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2 and nodes_not_seeing(str(tmp_path)) == []
    rows = conversations_of_every_length()
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[:40])
    write_jsonl(tmp_path / "in" / "b.jsonl", [*rows[40:], {"message_id": "blank", "conversation_id": "c3", "text": " "}])
    outputs = {"local": str(tmp_path / "local"), "ray": (tmp_path / "ray").as_uri()}  # file://: the URI path
    summaries = {}
    for engine, output in outputs.items():
        config = BatchConfig(
            [str(tmp_path / "in")], output, model=str(tiny_model_dir), engine=engine, chunk_rows=8, quiet=True, precision="fp32"
        )
        summaries[engine] = run_batch(config)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert summaries["ray"]["rows_in"] == len(rows) + 1 == summaries["ray"]["predictions"] + summaries["ray"]["errors"]
    assert [json.loads(line)["message_id"] for line in (distributed / "errors.jsonl").read_text().splitlines()] == ["blank"]
    assert not (distributed / "_ray").exists() and not list(distributed.glob("_probe-*"))

    by_id = {
        engine: pq.read_table(folder / "predictions.parquet").sort_by("message_id")
        for engine, folder in (("local", local), ("ray", distributed))
    }
    assert by_id["ray"]["message_id"].to_pylist() == by_id["local"]["message_id"].to_pylist()
    assert by_id["ray"]["label"].to_pylist() == by_id["local"]["label"].to_pylist()
    assert by_id["ray"]["p_extortion"].to_numpy() == pytest.approx(by_id["local"]["p_extortion"].to_numpy(), abs=1e-4)
    for key in ("order_id", "order_account_id", "sender_id", "shop_id", "time"):
        assert by_id["ray"][key].to_pylist() == by_id["local"][key].to_pylist()
    cases = {
        e: run_cases(CaseSettings(str(f), str(tmp_path / f"cases-{e}"), coercion=True, evidence=False)).sort_by("case_id")
        for e, f in (("local", local), ("ray", distributed))
    }
    assert cases["ray"].num_rows > 0 and cases["ray"].equals(cases["local"])  # the same cases.parquet from either engine

    listed = pq.read_table(distributed / "predictions.parquet")  # by file, then time
    keys = list(zip(listed["file"].to_pylist(), listed["time"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    columns = ["conversation_id", "messages", "extortion_messages", "coercion_messages", "max_p_extortion"]
    rollups = {
        e: pq.read_table(f / "conversations.parquet").select(columns).sort_by("conversation_id")
        for e, f in (("local", local), ("ray", distributed))
    }
    assert sorted(rollups["ray"]["messages"].to_pylist()) == list(range(1, 13))
    assert rollups["ray"].drop_columns(["max_p_extortion"]).equals(rollups["local"].drop_columns(["max_p_extortion"]))
    assert rollups["ray"]["max_p_extortion"].to_numpy() == pytest.approx(rollups["local"]["max_p_extortion"].to_numpy(), abs=1e-4)


def test_an_output_some_node_cannot_see_is_refused_before_any_work(two_nodes, tmp_path, monkeypatch):
    from serve.batch import ray_engine

    assert len(ray_engine.nodes_not_seeing(str(tmp_path / "nowhere"))) == 2
    monkeypatch.setattr(ray_engine, "nodes_not_seeing", lambda uri: ["f" * 56])
    with pytest.raises(ValueError, match=r"--output .*1 Ray node\(s\) cannot see"):
        ray_engine.refuse_unreachable_output(ray_engine.OutputLocation(str(tmp_path)))
    assert list(tmp_path.iterdir()) == []  # the probe is gone
