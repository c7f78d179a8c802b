"""sent.tracking against a real MLflow sqlite store in a temporary directory."""

from __future__ import annotations

import math

import pytest

from sent.tracking import Tracker, TrackingError, flatten, metric_name, resolve_tracking_uri

from sent_testing import ROOT


def test_the_tracking_uri_comes_from_config_then_environment_then_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/data/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://mlflow:5000"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    # a relative sqlite path would differ per working directory: pinned to the project
    assert resolve_tracking_uri("sqlite:///rel/m.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    assert (tmp_path / "rel").is_dir()


@pytest.mark.parametrize("uri", ["./mlruns", "mlruns", "file:///tmp/mlruns"])
def test_the_file_store_is_refused_with_the_way_out(uri, tmp_path):
    with pytest.raises(TrackingError, match=r"file store, which MLflow 3\.13\+ rejects; use a database"):
        resolve_tracking_uri(uri, tmp_path)


def test_flatten_and_metric_names():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": None, "f": {}}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "x",
        "e": "null",
        "f": "{}",
    }
    assert metric_name("avg@8") == "avg_at_8" and metric_name("train/acc:1 x") == "train/acc:1 x"
    assert metric_name("a*b") == "a_b"


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", tmp_path / "artifacts")


def test_runs_nest_and_log_everything_with_explicit_ids(tracker, tmp_path):
    parent = tracker.start_run("pipeline", tags={"sent.seed": "0"})
    # 230 params need three batches (MLflow takes 100 per call); a long value is cut with a marker
    params = {f"p{i:03d}": i for i in range(229)} | {"long": "x" * 7000}
    child = tracker.start_run("train:1", parent_id=parent, params=params)
    for step in (1, 2, 3):
        tracker.log_metrics(child, {"loss": 1.0 / step, "nan": math.nan, "flag": True, "avg@8": 0.5}, step)
    (tmp_path / "f.txt").write_text("hello")
    tracker.log_artifact(child, tmp_path / "f.txt")
    tracker.log_dataset(
        child, name="stage-1", digest="d" * 64, source=str(tmp_path), context="training", profile={"rows": 3}
    )
    tracker.end_run(child)
    tracker.end_run(parent, failed=True)

    (found,) = tracker.children(parent)
    assert found.info.run_id == child and found.info.status == "FINISHED"
    assert tracker.client.get_run(parent).info.status == "FAILED"
    run = tracker.client.get_run(child)
    assert len(run.data.params) == 230 and run.data.params["p007"] == "7"
    assert run.data.params["long"].endswith("...[truncated]") and len(run.data.params["long"]) == 6000
    history = tracker.client.get_metric_history(child, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert set(run.data.metrics) == {"loss", "avg_at_8"}  # NaN and booleans are not metrics
    assert [a.path for a in tracker.client.list_artifacts(child)] == ["f.txt"]
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").resolve().as_uri())
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "stage-1" and dataset.dataset.digest == "d" * 36
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"
    assert tracker.ui_link(child, "http://127.0.0.1:5000").endswith(
        f"/#/experiments/{tracker.experiment_id}/runs/{child}"
    )


def test_a_second_tracker_finds_the_experiment(tracker, tmp_path):
    again = Tracker(tracker.tracking_uri, "exp", tmp_path / "elsewhere")
    assert again.experiment_id == tracker.experiment_id


# ---------------------------------------------------------------------------------------------
# credentials never reach what is logged or stored
# ---------------------------------------------------------------------------------------------

REDACTIONS = [
    ("https://user:token@mlflow.example.com/api", "https://***@mlflow.example.com/api"),
    ("https://ghp_secret@host:5000", "https://***@host:5000"),
    ("s3://bucket/x.parquet?X-Amz-Signature=abc&part=2", "s3://bucket/x.parquet?X-Amz-Signature=***&part=2"),
    ("http://host/?token=t&api_key=k&q=1", "http://host/?token=***&api_key=***&q=1"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("postgresql://sent:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
    ("not a uri", "not a uri"),
]


@pytest.mark.parametrize(("uri", "expected"), REDACTIONS)
def test_redact_uri(uri, expected):
    from sent.redaction import redact_text, redact_uri

    assert redact_uri(uri) == expected
    assert redact_text(f"failed on {uri}: timeout") == f"failed on {expected}: timeout"


def test_credentials_in_a_config_are_refused_and_never_logged(tmp_path):
    """A config value with credentials would be stored verbatim in run.json, MLflow and Prefect's
    database: it is refused at load, without printing it. What reaches the tracker otherwise (tags,
    params, a link) has any URI's credentials masked, and the URI's own user is never printed."""
    from sent.config_base import ConfigError
    from sent.config_loading import load_config

    secret = "https://alice:s3cr3t@mlflow.example.com"
    for override in (
        f"tracking.tracking_uri={secret}",
        "data.train_path=https://s3.example.com/x.parquet?X-Amz-Signature=s3cr3t",
    ):
        with pytest.raises(ConfigError, match=r"holds credentials in a URI.*MLFLOW_TRACKING_USERNAME") as exc:
            load_config(ROOT / "configs" / "toy.yaml", [override])
        assert "s3cr3t" not in str(exc.value)
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "e")
    run = tracker.start_run("r", tags={"sent.note": f"from {secret}"}, params={"where": {"uri": secret}})
    data = tracker.client.get_run(run).data
    assert data.params["where.uri"] == "https://***@mlflow.example.com"
    assert data.tags["sent.note"] == "from https://***@mlflow.example.com"
    assert not any("s3cr3t" in v for v in [*data.params.values(), *data.tags.values()])


def test_an_mlflow_error_never_carries_the_uris_credentials(monkeypatch):
    """A tracking server that is gone mid-run: MLflow's error quotes the whole URI (userinfo too),
    which Prefect prints and stores. Through the tracker it is a TrackingError with it masked."""
    import mlflow

    from sent.tracking import _RedactedClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = _RedactedClient(mlflow.MlflowClient(tracking_uri="http://alice:s3cr3t@127.0.0.1:9"))
    with pytest.raises(TrackingError) as exc:
        client.get_experiment_by_name("e")  # nothing listens on the discard port
    assert "s3cr3t" not in str(exc.value) and "***@127.0.0.1:9" in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
