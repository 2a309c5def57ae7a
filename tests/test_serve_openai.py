"""The official ``openai`` client, unchanged, against ``anymoda serve`` (a real subprocess on stub tools):
chat, streaming with task events, files, an image in, audio out, and a conversation that remembers."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")
from serve_harness import start_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-openai"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key("acme"), max_retries=0, timeout=60)


def png(colour=(10, 20, 30), size=(16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def wav_samples(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as reader:
        frames = reader.readframes(reader.getnframes())
        assert reader.getsampwidth() == 2
    return np.frombuffer(frames, "<i2").astype(np.float64) / 32768.0


def test_models_list_the_agent(client):
    assert [m.id for m in client.models.list()] == ["anymoda"]


def test_chat_answers_and_returns_its_output_as_a_downloadable_file(client):
    reply = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": "paint it blue"}])
    message = reply.choices[0].message
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason == "stop"
    assert "paint it blue" in message.content
    extension = reply.model_extra["anymoda"]
    assert extension["status"] == "done" and reply.model_extra["conversation"] == extension["conversation"]
    [output] = extension["files"]
    assert output["kind"] == "image" and output["purpose"] == "assistants_output"
    image = Image.open(io.BytesIO(client.files.content(output["id"]).read()))
    assert image.size == (32, 32) and image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_an_image_in_as_a_data_url_is_brightened(client):
    data_url = "data:image/png;base64," + base64.b64encode(png((10, 20, 30))).decode()
    reply = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": [
        {"type": "text", "text": "make this brighter"}, {"type": "image_url", "image_url": {"url": data_url}}]}])
    [output] = reply.model_extra["anymoda"]["files"]
    image = Image.open(io.BytesIO(client.files.content(output["id"]).read())).convert("RGB")
    assert image.size == (16, 12) and image.getpixel((3, 3)) == (70, 80, 90)  # +60 per channel: stub-brighten ran on ours


def test_an_uploaded_file_is_used_by_its_id(client, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png((100, 0, 0), (8, 8)))
    uploaded = client.files.create(file=path.open("rb"), purpose="vision")
    assert uploaded.filename == "photo.png" and uploaded.bytes == path.stat().st_size and uploaded.purpose == "vision"
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    reply = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": [
        {"type": "text", "text": "brighten it"}, {"type": "file", "file": {"file_id": uploaded.id}}]}])
    [output] = reply.model_extra["anymoda"]["files"]
    pixel = Image.open(io.BytesIO(client.files.content(output["id"]).read())).convert("RGB").getpixel((0, 0))
    assert pixel == (160, 60, 60)
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert uploaded.id not in [f.id for f in client.files.list()]


def test_audio_out_and_a_later_turn_that_refers_to_it(client):
    first = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": "say hello as a tone"}])
    audio = first.choices[0].message.audio
    assert audio is not None and audio.transcript == first.choices[0].message.content
    quiet = wav_samples(base64.b64decode(audio.data))
    assert quiet.size == 4000 and 0.18 < np.abs(quiet).max() < 0.21
    assert client.files.content(audio.id).read() == base64.b64decode(audio.data)
    conversation = first.model_extra["conversation"]
    second = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": "now make it louder"}],
                                            extra_body={"conversation": conversation})
    assert second.model_extra["conversation"] == conversation
    loud = wav_samples(base64.b64decode(second.choices[0].message.audio.data))
    assert 0.38 < np.abs(loud).max() < 0.41  # the first turn's sound, doubled: the conversation remembered it


def test_audio_in_as_input_audio(client):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes((np.sin(np.arange(800) / 5) * 8000).astype("<i2").tobytes())
    reply = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": [
        {"type": "text", "text": "make this louder"},
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(buffer.getvalue()).decode(), "format": "wav"}}]}])
    louder = wav_samples(base64.b64decode(reply.choices[0].message.audio.data))
    assert louder.size == 800 and 0.45 < np.abs(louder).max() < 0.5  # 8000/32768 = 0.244, doubled


def test_streaming_gives_text_deltas_and_the_runs_task_events(client):
    stream = client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": "paint it green"}],
                                            stream=True)
    text, events, finish, final = "", [], None, None
    for chunk in stream:
        extra = chunk.model_extra.get("anymoda") or {}
        if "event" in extra:
            events.append(extra["event"]["type"])
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                finish, final = choice.finish_reason, extra
    assert "paint it green" in text and finish == "stop"
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert {"plan_ready", "task_started", "task_finished"} <= set(events)
    assert final["status"] == "done" and final["files"][0]["kind"] == "image"


def test_the_clients_stream_helper_and_async_client_work(client, server):
    with client.chat.completions.stream(model="anymoda", messages=[{"role": "user", "content": "paint it red"}]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert "paint it red" in final.choices[0].message.content

    async def ask():
        async_client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=client.api_key, max_retries=0)
        return await async_client.chat.completions.create(model="anymoda", messages=[{"role": "user", "content": "say hi"}])

    import asyncio

    assert asyncio.run(ask()).choices[0].message.audio.id.startswith("file-")


def test_the_tools_route_gives_each_tools_json_schema(server, client):
    import httpx

    tools = httpx.get(server.url + "/v1/tools", headers={"Authorization": f"Bearer {client.api_key}"}).json()["data"]
    brighten = next(t for t in tools if t["function"]["name"] == "stub-brighten")
    schema = brighten["function"]["parameters"]
    assert schema["type"] == "object" and schema["required"] == ["image"]
    assert schema["properties"]["amount"]["maximum"] == 255 and brighten["outputs"]["image"]["kind"] == "image"
