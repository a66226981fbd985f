"""Shared viewing (issue 6 item 5): the presenter's DICOM/ECG view mirrored to the others over
the signaling socket of a real hub; the state's validation and pointer coalescing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from telehub import consult_sync
from telehub.errors import Invalid
from tests.test_consults import case_id, hub, join, new_consult, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(120)

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
VIEW = {
    "mode": "dicom",
    "study_uid": STUDY,
    "series_uid": SERIES,
    "instance": 12,
    "window_center": 40,
    "window_width": 400,
    "zoom": 1.5,
    "pan": {"x": 0.1, "y": -0.2},
    "pointer": {"x": 0.5, "y": 0.25},
}


# ----- the state itself ----------------------------------------------------------------------
def test_a_full_dicom_view_is_normalised() -> None:
    state = consult_sync.merge(None, VIEW)
    assert state == {**VIEW, "window_center": 40.0, "window_width": 400.0}
    assert isinstance(state["zoom"], float)


def test_partial_updates_keep_the_rest_and_a_new_mode_starts_fresh() -> None:
    state = consult_sync.merge(None, VIEW)
    moved = consult_sync.merge(state, {"instance": 13, "pointer": None})
    assert moved["instance"] == 13 and moved["pointer"] is None and moved["zoom"] == 1.5
    ecg = consult_sync.merge(moved, {"mode": "ecg", "ecg_id": 7, "offset": 2.5})
    assert ecg == {
        "mode": "ecg",
        "ecg_id": 7,
        "offset": 2.5,
        "gain": 10.0,
        "speed": 25.0,
        "pointer": None,
    }


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({**VIEW, "pointer": {"x": 1.2, "y": 0.5}}, "pointer.x"),
        ({**VIEW, "pointer": {"x": 0.5}}, "pointer"),
        ({**VIEW, "instance": -1}, "instance"),
        ({**VIEW, "instance": 1.5}, "instance"),
        ({**VIEW, "instance": True}, "instance"),
        ({**VIEW, "window_width": 0}, "window_width"),
        ({**VIEW, "zoom": "2"}, "zoom"),
        ({**VIEW, "zoom": float("nan")}, "zoom"),
        ({**VIEW, "study_uid": "1.2.abc"}, "study_uid"),
        ({**VIEW, "series_uid": "1." * 40}, "series_uid"),
        ({**VIEW, "colour": "red"}, "colour"),
        ({"mode": "dicom", "study_uid": STUDY}, "series_uid"),
        ({"mode": "video"}, "mode"),
        ({"mode": "ecg", "ecg_id": 0}, "ecg_id"),
        ({"mode": "ecg", "ecg_id": 3, "gain": 500}, "gain"),
        ({"mode": "ecg", "ecg_id": 3, "offset": -1}, "offset"),
    ],
)
def test_bad_updates_are_refused_with_the_field_named(update: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        consult_sync.merge(None, update)
    assert caught.value.code == "invalid_sync" and field in caught.value.message


def test_bad_update_leaves_the_state_as_it_was() -> None:
    sync = consult_sync.SyncState()
    sync.update(VIEW, now=0.0)
    with pytest.raises(Invalid):
        sync.update({"zoom": -3}, now=1.0)
    assert sync.state is not None and sync.state["zoom"] == 1.5 and sync.seq == 1


def test_pointer_only_updates_are_coalesced() -> None:
    sync = consult_sync.SyncState(pointer_hz=10)
    assert sync.update(VIEW, now=0.0).send_now
    held = sync.update({"pointer": {"x": 0.6, "y": 0.6}}, now=0.02)
    assert not held.send_now and held.delay == pytest.approx(0.08) and sync.pending
    # anything but the pointer goes out at once, carrying the latest pointer too
    out = sync.update({"instance": 3}, now=0.03)
    assert out.send_now and out.state["pointer"] == {"x": 0.6, "y": 0.6} and not sync.pending
    assert sync.update({"pointer": {"x": 0.1, "y": 0.1}}, now=0.2).send_now


# ----- over the signaling socket -------------------------------------------------------------
def test_presenter_view_reaches_others_and_late_joiners(hub, case_id) -> None:  # noqa: F811
    cid = new_consult(hub, case_id, invite=["reader", "reader2"], auto_admit=True)["id"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, hw = await join(s, hub, cid, "clinic")
            guest, gw = await join(s, hub, cid, "reader")
            assert gw["presenter"] == hw["participant_id"] and gw["sync"] is None
            await host.send(type="sync", state=VIEW)
            got = await guest.expect("sync")
            assert got["state"]["study_uid"] == STUDY and got["from"] == hw["participant_id"]
            assert got["state"]["pointer"] == {"x": 0.5, "y": 0.25}

            # not the presenter: refused, nothing changes
            await guest.send(type="sync", state={"instance": 99})
            assert (await guest.expect("error"))["code"] == "not_presenter"
            # invalid: refused, nothing changes, the connection stays
            await host.send(type="sync", state={"instance": -5})
            error = await host.expect("error")
            assert error["code"] == "invalid_sync" and "instance" in error["message"]
            await host.send(type="sync", state={"instance": 20})
            assert (await guest.expect("sync"))["state"]["instance"] == 20

            late, lw = await join(s, hub, cid, "reader2")
            assert lw["sync"]["instance"] == 20 and lw["sync"]["zoom"] == 1.5
            assert lw["presenter"] == hw["participant_id"]

            # the guest takes over and shows an ECG; the host's sync is refused now
            await guest.send(type="present")
            assert (await host.expect("presenter"))["participant_id"] == gw["participant_id"]
            await late.expect("presenter")
            await host.send(type="sync", state={"instance": 1})
            assert (await host.expect("error"))["code"] == "not_presenter"
            ecg = {"mode": "ecg", "ecg_id": 5, "offset": 3.2, "gain": 20}
            await guest.send(type="sync", state=ecg)
            for peer in (host, late):
                shown = (await peer.expect("sync"))["state"]
                assert shown["mode"] == "ecg" and shown["offset"] == 3.2 and shown["gain"] == 20
            await guest.send(type="ping")
            await guest.expect("pong")
            # the two views it saw as a viewer, not its own view back as the presenter
            assert guest.types().count("sync") == 2

    asyncio.run(scenario())


def test_pointer_storm_is_coalesced_and_ends_on_the_last_position(hub, case_id) -> None:  # noqa: F811
    cid = new_consult(hub, case_id, invite=["reader"], auto_admit=True)["id"]
    moves = 60

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            host, _ = await join(s, hub, cid, "clinic")
            guest, _ = await join(s, hub, cid, "reader")
            await host.send(type="sync", state=VIEW)
            await guest.expect("sync")
            for i in range(1, moves + 1):
                await host.send(type="sync", state={"pointer": {"x": i / moves, "y": 0.5}})
            last = await until(guest, "sync", lambda m: m["state"]["pointer"]["x"] == 1.0)
            assert last["seq"] == moves + 1
            await host.send(type="ping")
            await host.expect("pong")
            received = [m for m in guest.seen if m["type"] == "sync"]
            assert len(received) < moves  # coalesced, yet the final position arrived
            seqs = [m["seq"] for m in received]
            assert seqs == sorted(seqs)

    asyncio.run(scenario())
