"""The cluster's DTLS certificate (appliance/cluster/certificate.py): made once for all boxes, sealed
in the store, renewed before it expires with the old one kept."""
from __future__ import annotations

import asyncio
import datetime

import pytest

from appliance.cluster import certificate
from appliance.cluster.memory import MemoryStore
from appliance.cluster.seal import Sealer, Unsealed
from appliance.cluster.store import SECRETS
from appliance.rtc.dtls import fingerprint_of

SEALER = Sealer("the cluster secret of the test", "store")


def fingerprint(cert) -> str:
    return fingerprint_of(cert).value


async def test_boxes_starting_together_all_present_the_one_certificate_the_first_made():
    store = MemoryStore()
    made = await asyncio.gather(*(certificate.shared(store, SEALER) for _ in range(5)))
    assert len({fingerprint(m.current) for m in made}) == 1
    entry = await store.get(SECRETS, certificate.KEY)
    assert b"PRIVATE KEY" not in entry.value  # sealed: the store shows no key
    with pytest.raises(Unsealed):
        certificate.unseal(entry.value, Sealer("another cluster's secret!", "store"))


async def test_a_certificate_near_its_end_is_renewed_once_and_the_old_one_kept():
    store = MemoryStore()
    first = await certificate.shared(store, SEALER)
    late = first.current.expires - certificate.RENEW_BEFORE + datetime.timedelta(hours=1)
    renewed = await asyncio.gather(*(certificate.shared(store, SEALER, lambda: late) for _ in range(3)))
    assert len({fingerprint(r.current) for r in renewed}) == 1
    assert fingerprint(renewed[0].current) != fingerprint(first.current)
    assert fingerprint(renewed[0].previous) == fingerprint(first.current)
    # Until then it is left alone.
    early = first.current.expires - certificate.RENEW_BEFORE - datetime.timedelta(hours=1)
    assert not certificate.due(first, early) and certificate.due(first, late)
