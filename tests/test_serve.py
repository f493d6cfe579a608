"""`fer-pipeline serve`: a real server in a subprocess on a free loopback port, serving a
tiny exported model, answers Vertex's body with the exported signature's 7 scores per
instance, classifies a raw photo, refuses each malformed request with a 4xx JSON error
naming the problem, and still answers afterwards."""

from __future__ import annotations

import shutil
import socket

import httpx
import numpy as np
import pytest

from bench.load_test import (
    face_pngs,
    malformed_requests,
    png_bytes,
    running_server,
    send_bad_requests,
    vertex_body,
)
from fer_pipeline import cli
from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError

tf = pytest.importorskip("tensorflow")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_INSTANCES = 8
MAX_BODY_BYTES = 200_000


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A registry-style version folder: the serving SavedModel with model.keras beside it."""
    import keras

    from fer_pipeline.export import export_serving_model
    from tiny_models import tiny_model

    keras.utils.set_random_seed(0)
    work = tmp_path_factory.mktemp("served")
    tiny_model().save(work / "model.keras")
    folder = export_serving_model(work / "model.keras", work / "version")
    shutil.copy2(work / "model.keras", folder / "model.keras")
    return folder


@pytest.fixture(scope="module")
def prediction_log(tmp_path_factory):
    return tmp_path_factory.mktemp("log") / "predictions.jsonl"


@pytest.fixture(scope="module")
def server(model_folder, prediction_log, tmp_path_factory):
    output = tmp_path_factory.mktemp("server") / "server.log"
    options = ("--name", "fer-test", "--log", str(prediction_log))
    limits = ("--max-instances", str(MAX_INSTANCES), "--max-body-bytes", str(MAX_BODY_BYTES))
    with running_server(str(model_folder), output, *options, *limits, startup_s=120) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield http


def test_a_vertex_body_gets_the_exported_signatures_seven_scores_per_instance(client, model_folder):
    faces = face_pngs()[:3]
    response = client.post(
        "/v1/models/fer-test:predict", content=vertex_body(faces), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    loaded = tf.saved_model.load(str(model_folder))  # the signature's variables live as long as this
    expected = loaded.signatures["serving_default"](image_bytes=tf.constant(faces))["scores"].numpy()
    for row, scores in zip(predictions, expected):
        assert len(row["scores"]) == 7 and row["classes"] == list(CLASSES)
        assert row["label"] == CLASSES[int(np.argmax(row["scores"]))]
        np.testing.assert_allclose(row["scores"], scores, atol=1e-6)


def test_status_metadata_and_health_answer_as_tf_serving(client):
    status = client.get("/v1/models/fer-test").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    signature = client.get("/v1/models/fer-test/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert signature["serving_default"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(signature["serving_default"]["outputs"]) == {"scores", "label", "classes"}
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/v1/models/fer-test/versions/1").status_code == 200


def test_a_raw_photo_gets_each_faces_box_and_emotions(client):
    photo = face_pngs()[0]
    response = client.post(
        "/v1/models/fer-test:detect?skip_detection=true", content=photo, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    (face,) = response.json()["faces"]
    assert face["box"] == [0, 0, 48, 48]
    assert set(face["emotions"]) == set(CLASSES) and face["label"] in CLASSES


def test_a_photo_over_the_pixel_limit_gets_413_from_detect_as_from_predict(client, tmp_path):
    from test_predict_limits import png_header_only

    huge = png_header_only(tmp_path / "huge.png", 10_000, 10_000).read_bytes()  # 100 Mpx claimed, ~100 bytes
    response = client.post("/v1/models/fer-test:detect", content=huge, headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "over the" in response.json()["error"], response.text


def test_a_photo_without_a_face_gets_no_faces_and_a_note(client):
    blank = png_bytes(np.full((120, 160), 128, np.uint8))
    response = client.post("/v1/models/fer-test:detect", content=blank, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["faces"] == [] and "skip_detection=true" in body["note"]


def test_each_malformed_request_gets_a_4xx_json_error_and_the_server_lives_on(client, server):
    bad = malformed_requests("fer-test", max_instances=MAX_INSTANCES, max_body_bytes=MAX_BODY_BYTES)
    answers = send_bad_requests(server.base_url, bad)
    wrong = [(a.label, a.status, a.error) for a, b in zip(answers, bad) if a.status != b.expected or not a.error]
    assert wrong == []
    assert server.healthy()
    again = client.post("/v1/models/fer-test:predict", content=vertex_body(face_pngs()[:1]))
    assert again.status_code == 200 and len(again.json()["predictions"][0]["scores"]) == 7
    assert "Unexpected error" not in server.output.read_text(errors="replace")


def test_a_full_server_refuses_at_once_with_503():
    from fer_pipeline.serve import AdmissionGate, ApiError

    gate = AdmissionGate(max_concurrent=1, max_queue=1)
    with gate.admit(), gate.admit():
        with pytest.raises(ApiError) as refused:
            with gate.admit():
                pass
    assert refused.value.status == 503 and "busy" in refused.value.message
    with gate.admit():  # the slots came back
        pass


def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    code = cli.main(["serve", "no-such-model@champion", "--registry", str(tmp_path), "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: Model 'no-such-model@champion' is not a local path"), err


@pytest.mark.parametrize("name", ["a b/c", "", "@champion"])
def test_a_name_that_cannot_be_a_url_segment_is_refused_before_any_loading(tmp_path, capsys, monkeypatch, name):
    from fer_pipeline import cli_serve

    monkeypatch.setattr(cli_serve, "import_server", lambda: pytest.fail("the server must not start"))
    code = cli.main(["serve", str(tmp_path / "model.keras"), "--name", name, "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --name: Model name {name!r} is invalid"), err


def test_an_unknown_host_is_refused_before_the_public_address_warning(tmp_path, capsys):
    code = cli.main(["serve", str(tmp_path / "model.keras"), "--host", "999.1.1.1", "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err  # no "listening on 999.1.1.1" warning before it
    assert err[0].startswith("error: --host '999.1.1.1' is not an address this machine knows"), err


def test_a_busy_port_is_one_line_before_any_loading(model_folder, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["serve", str(model_folder), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: cannot listen on 127.0.0.1:{port}"), err


def test_the_prediction_log_gets_a_line_per_face(client, prediction_log, model_folder):
    from fer_pipeline.prediction_log import read_log

    before = len(prediction_log.read_text().splitlines()) if prediction_log.exists() else 0
    assert client.post("/v1/models/fer-test:predict", content=vertex_body(face_pngs()[:2])).is_success
    assert client.post("/v1/models/fer-test:detect?skip_detection=1", content=face_pngs()[3]).is_success
    records = read_log(prediction_log)[before:]
    assert len(records) == 3 and [r["face_size"] for r in records] == [48, 48, 48]
    assert {r["model_version"] for r in records} == {str(model_folder)}


def test_sigterm_stops_the_server_with_143_and_removes_its_scratch_copy(model_folder, tmp_path, monkeypatch):
    """Vertex and Kubernetes stop a server with SIGTERM; the .keras file's exported copy must
    not outlive it (uvicorn re-raises the signal after its graceful shutdown; cli.sigterm_unwinds)."""
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch_root))
    with running_server(str(model_folder / "model.keras"), tmp_path / "server.log") as running:  # exports first
        assert len(list(scratch_root.glob("fer-serve-*/serving/saved_model.pb"))) == 1
        assert httpx.get(f"{running.base_url}/health", timeout=30).status_code == 200
    assert running.process.returncode == 143, running.output.read_text()[-2000:]
    assert running.output.read_text().rstrip().endswith("terminated")  # after uvicorn's own shutdown lines
    assert list(scratch_root.glob("fer-serve-*")) == []  # (TensorFlow's autograph files stay: not ours)


def test_vertex_routes_from_the_environment_reach_health_and_predict():
    import asyncio

    from fer_pipeline.serve import ServedModel, build_app
    from fer_pipeline.serve_limits import Limits

    model = ServedModel(name="m", version=3, source="nowhere", signature=None, keras_model=None)
    vertex_predict = "/v1/endpoints/1/deployedModels/2:predict"
    app = build_app(model, Limits(), health_routes=("/ready",), predict_routes=(vertex_predict,))

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as http:
            return await http.get("/ready"), await http.post(vertex_predict, content=b"{")

    health, refused = asyncio.run(ask())
    assert health.json() == {"status": "ok", "model": "m", "version": "3"}
    assert refused.status_code == 400 and "not valid JSON" in refused.json()["error"]


def test_the_detector_loads_at_start_and_a_failing_one_leaves_predict_serving(monkeypatch, caplog):
    from fer_pipeline import faces, serve_model

    seen = []
    monkeypatch.setattr(faces, "detect_faces", lambda gray, options: seen.append((gray.shape, options)) or [])
    serve_model.load_face_detector()
    assert seen == [((96, 96), faces.DEFAULT_OPTIONS)]

    def broken(gray, options):
        raise FerError("mtcnn is not installed: pip install '.[detect]'")

    monkeypatch.setattr(faces, "detect_faces", broken)
    serve_model.load_face_detector()  # no exception: :predict does not need a detector
    assert ":detect requests will fail: mtcnn is not installed" in caplog.text
