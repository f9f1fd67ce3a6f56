import json
import logging

from appliance import logs


def emit(fmt, capsys, **fields):
    logs.configure(fmt)
    logs.get_logger("api").info("listening", **fields)
    try:
        raise ValueError("bad")
    except ValueError:
        logs.get_logger("api").exception("failed")
    err = capsys.readouterr().err.splitlines()
    logging.getLogger().handlers.clear()
    return err


def test_json_lines_carry_fields(capsys):
    first, second = emit("json", capsys, url="http://127.0.0.1:8080", port=8080)
    event = json.loads(first)
    assert event["level"] == "info" and event["logger"] == "api" and event["msg"] == "listening"
    assert event["url"] == "http://127.0.0.1:8080" and event["port"] == 8080
    assert event["time"].endswith("Z")
    assert "ValueError: bad" in json.loads(second)["exception"]


def test_text_is_one_line_per_event(capsys):
    lines = emit("text", capsys, reason="two words", url="x")
    assert len(lines) == 2
    assert lines[0].endswith('INFO api: listening reason="two words" url=x')
    assert "ValueError: bad" in lines[1]
