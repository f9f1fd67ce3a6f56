"""One /metrics for the whole box when it runs workers: a scrape reaches whichever worker the kernel
hands its connection to, and that worker answers with every worker's metrics, each sample labelled
with its `worker`. Pure: the texts in, the text out (api/health.py fetches them)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

LABEL = "worker"


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(texts: Mapping[str, str]) -> bytes:
    """The exposition of every worker's text (by its label value) as one, each sample labelled."""
    merged: dict[str, Metric] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples += [Sample(s.name, {**s.labels, LABEL: worker}, s.value, s.timestamp, s.exemplar)
                             for s in family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(merged.values())))
    return generate_latest(registry)
