"""Usage of several boxes added up bucket by bucket (appliance/dashboard/cluster_usage.py)."""
from appliance.dashboard.cluster_usage import merge
from appliance.dashboard.query import QueryError, parse

import pytest


def point(t, ingress=0, egress=0, sessions=0, allocations=0):
    return {"t": t, "ingressBytes": ingress, "egressBytes": egress, "sessions": sessions, "allocations": allocations}


def test_points_of_one_key_and_bucket_add_up_and_others_stay_apart():
    a = [{"app": "demo", "points": [point(0, 10, 20, 1, 0), point(60, 5, 5, 2, 1)]}]
    b = [{"app": "demo", "points": [point(60, 1, 2, 3, 4), point(120, 7, 7, 1, 0)]},
         {"app": "other", "points": [point(0, 9, 9, 9, 9)]}]
    merged = {line["app"]: line["points"] for line in merge("app", [a, b])}
    assert merged["demo"] == [point(0, 10, 20, 1, 0), point(60, 6, 7, 5, 5), point(120, 7, 7, 1, 0)]
    assert merged["other"] == [point(0, 9, 9, 9, 9)]


def test_by_box_keeps_each_box_its_own_line():
    merged = merge("box", [[{"box": "a", "points": [point(0, 1)]}], [{"box": "b", "points": [point(0, 2)]}]])
    assert merged == [{"box": "a", "points": [point(0, 1)]}, {"box": "b", "points": [point(0, 2)]}]


def test_scope_is_cluster_or_box():
    assert parse({}, 3600.0).scope == "cluster"
    assert parse({"scope": ["box"]}, 3600.0).scope == "box"
    with pytest.raises(QueryError, match="scope"):
        parse({"scope": ["world"]}, 3600.0)
