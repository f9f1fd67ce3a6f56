"""The JavaScript client's hand-written types (static/sdk/edgecall.d.ts) name what the module
(static/sdk/edgecall.js) has, both ways: every export, and every public method, getter and field of
each class, so that the two cannot drift apart. Both are read as text (no TypeScript compiler here)."""
from __future__ import annotations

import re
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "appliance" / "api" / "static" / "sdk"
# What a declaration may name that the class gets from the platform rather than from its own body.
INHERITED = {"addEventListener", "removeEventListener", "dispatchEvent", "message", "name", "stack"}


def bodies(text: str, header: str) -> dict[str, str]:
    """Name -> body of each top-level block whose first line matches `header` (a regex with one
    group, the name); a body runs to the next line that is a lone closing brace at column 0."""
    out = {}
    for match in re.finditer(header, text, re.MULTILINE):
        end = text.index("\n}", match.end())
        out[match.group(1)] = text[match.end():end]
    return out


def js_members(body: str) -> set[str]:
    """A class's public methods and accessors (two-space indented) and the fields it sets on `this`."""
    methods = re.findall(r"^  (?:static )?(?:async )?(?:get |set )?([A-Za-z_$][\w$]*)\s*\(", body, re.MULTILINE)
    fields = re.findall(r"\bthis\.([A-Za-z_$][\w$]*)\s*=[^=]", body)
    return (set(methods) | set(fields)) - {"constructor", "if", "for", "while", "switch", "catch"}


def ts_members(body: str) -> set[str]:
    return set(re.findall(r"^  (?:readonly )?([A-Za-z_$][\w$]*)\??\s*[(<:]", body, re.MULTILINE)) - {"constructor"}


JS = (SDK / "edgecall.js").read_text()
TS = (SDK / "edgecall.d.ts").read_text()
JS_CLASSES = bodies(JS, r"^(?:export )?class (\w+)[^\n]*\{\n")
TS_DECLARED = bodies(TS, r"^export (?:declare class|interface) (\w+)[^\n]*\{\n")


def test_the_module_and_the_declarations_export_the_same_names():
    js = set(re.findall(r"^export (?:async )?(?:class|function\*?|const|let|var) (\w+)", JS, re.MULTILINE))
    ts = set(re.findall(r"^export declare (?:class|function|const|let) (\w+)", TS, re.MULTILINE))
    assert js == {"Edgecall", "EdgecallError", "OperationQueue"}, js
    assert js == ts


def test_every_class_of_the_module_is_declared_with_exactly_its_public_members():
    assert set(JS_CLASSES) == {"Edgecall", "EdgecallError", "OperationQueue", "LocalTrack", "RemoteTrack"}
    for name, body in JS_CLASSES.items():
        assert name in TS_DECLARED, f"edgecall.d.ts does not declare {name}"
        js, ts = js_members(body), ts_members(TS_DECLARED[name])
        assert js - ts == set(), f"{name}: in edgecall.js, not in edgecall.d.ts"
        assert ts - js - INHERITED == set(), f"{name}: in edgecall.d.ts, not in edgecall.js"


def test_the_parsers_see_the_members_they_compare():
    # Without this, broken regexes would compare two empty sets and pass.
    assert {"connect", "push", "pull", "pullMany", "publishData", "subscribeData", "stats", "close", "state",
            "sessionId", "pc"} <= js_members(JS_CLASSES["Edgecall"])
    assert {"name", "kind", "mid", "sessionId", "track", "muted", "replace", "mute", "close"} == js_members(
        JS_CLASSES["LocalTrack"])
    assert {"errorCode", "status", "failures"} <= ts_members(TS_DECLARED["EdgecallError"])


def test_the_events_the_module_fires_are_declared():
    fired = set(re.findall(r'#emit\("(\w+)"', JS))
    declared = set(re.findall(r"^  (\w+): CustomEvent<", TS_DECLARED["EdgecallEventMap"], re.MULTILINE))
    assert fired == {"track", "trackended", "statechange", "reconnected", "datachannel"}
    assert fired == declared
