"""The Ray engine on a local Ray instance gives the local engine's predictions."""

import json

import pyarrow.parquet as pq
import pytest

from serve.batch import BatchConfig, run_batch
from tests.test_batch import chat_rows, write_jsonl

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_matches_local_engine(local_ray, tiny_model_dir, tmp_path):
    records = chat_rows(60)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records[:30])
    write_jsonl(tmp_path / "in" / "b.jsonl", [*records[30:], {"message_id": "bad", "conversation_id": "c1", "text": "  "}])
    results = {}
    for engine in ("local", "ray"):
        config = BatchConfig(
            [str(tmp_path / "in")],
            str(tmp_path / engine),
            model=str(tiny_model_dir),
            engine=engine,
            chunk_rows=16,
            quiet=True,
            precision="fp32",
            context_turns=3,
        )
        summary = run_batch(config)
        assert summary["rows_in"] == 61 and summary["errors"] == 1 and summary["engine"] == engine
        table = pq.read_table(tmp_path / engine / "predictions.parquet").sort_by("message_id")
        results[engine] = table
        errors = [json.loads(line) for line in (tmp_path / engine / "errors.jsonl").read_text().splitlines()]
        assert [e["message_id"] for e in errors] == ["bad"]
        assert (tmp_path / engine / "report.html").exists() and (tmp_path / engine / "senders.parquet").exists()
    local, distributed = results["local"], results["ray"]
    assert distributed.column("message_id").to_pylist() == local.column("message_id").to_pylist()
    assert distributed.column("label").to_pylist() == local.column("label").to_pylist()
    assert distributed.column("p_extortion").to_numpy() == pytest.approx(local.column("p_extortion").to_numpy(), abs=1e-5)


def test_ray_engine_with_only_bad_rows_writes_errors_and_no_predictions(local_ray, tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", [{"message_id": f"b{i}", "conversation_id": "c1", "text": " "} for i in range(3)])
    config = BatchConfig([str(tmp_path / "bad.jsonl")], str(tmp_path / "out"), model=str(tiny_model_dir), engine="ray", quiet=True)
    summary = run_batch(config)
    assert (summary["rows_in"], summary["predictions"], summary["errors"]) == (3, 0, 3)
    assert pq.read_table(tmp_path / "out" / "predictions.parquet").num_rows == 0 and not (tmp_path / "out" / "_ray").exists()
