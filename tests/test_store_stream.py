"""The lean C-STORE / C-ECHO path (dicom/store_stream.py): its command sets as pynetdicom reads
and writes them, and, over real associations, C-STORE and C-ECHO served by it interleaved with
C-FIND served by pynetdicom on one association; a store in tiny fragments, several to a PDU;
nothing left in the spool after an abort; an invalid PDV item aborts the association; a spool
that cannot be written answers 0xA700 and the association goes on."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from dicom.store_stream import C_STORE_RSP, encode_response, p_data_tf, parse_command
from tests.helpers import Hub, dataset_bytes, fresh_copy, start_hub
from tests.test_dicom_conformance import (
    _ct,
    _half_sent_store,
    assert_hub_serves,
    assert_nothing_kept,
    associate,
    context_id,
    store_request,
    stored_instance,
)


def test_responses_decode_as_pynetdicom_reads_them() -> None:
    uid = generate_uid()
    raw = encode_response(C_STORE_RSP, 7, 0xA900, CTImageStorage, uid, "SOP Class differs")
    rsp = decode(io.BytesIO(raw), True, True)
    assert rsp.CommandGroupLength == len(raw) - 12
    assert rsp.AffectedSOPClassUID == CTImageStorage
    assert rsp.AffectedSOPInstanceUID == uid
    assert (rsp.CommandField, rsp.MessageIDBeingRespondedTo) == (0x8001, 7)
    assert (rsp.CommandDataSetType, rsp.Status) == (0x0101, 0xA900)
    assert rsp.ErrorComment == "SOP Class differs"
    tags = [int(elem.tag) for elem in rsp]
    assert tags == sorted(tags)


def test_requests_are_read_as_pynetdicom_writes_them() -> None:
    request = C_STORE()
    request.MessageID = 12
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = uid = generate_uid()
    request.Priority = 2
    request.MoveOriginatorApplicationEntityTitle = "WORKSTATION"
    request.MoveOriginatorMessageID = 3
    request.DataSet = io.BytesIO(b"\x08\x00\x16\x00\x02\x00\x00\x00AB")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    fragments = [
        pdv
        for primitive in message.encode_msg(1, 64)  # 64-byte PDUs: the command in pieces
        for pdv in primitive.presentation_data_value_list
        if pdv[1][0] & 0x01
    ]
    assert len(fragments) > 1
    elements = parse_command(b"".join(fragment[1][1:] for fragment in fragments))
    assert elements[0x0100] == b"\x01\x00"
    assert elements[0x0110] == b"\x0c\x00"
    assert elements[0x1000].rstrip(b"\0").decode() == uid
    assert elements[0x0002].rstrip(b"\0").decode() == CTImageStorage


@pytest.mark.parametrize("max_pdu", [0, 16, 40, 16384])
def test_responses_respect_the_peers_maximum_pdu(max_pdu: int) -> None:
    command = encode_response(C_STORE_RSP, 1, 0, CTImageStorage, generate_uid(), "x" * 40)
    stream = p_data_tf(3, command, max_pdu)
    received, offset = b"", 0
    while offset < len(stream):
        length = int.from_bytes(stream[offset + 2 : offset + 6], "big")
        pdu = P_DATA_TF()
        pdu.decode(stream[offset : offset + 6 + length])
        assert not max_pdu or length <= max_pdu  # the variable field (PS3.8 D.1)
        for item in pdu.presentation_data_value_items:
            context_id, data = item.presentation_context_id, item.presentation_data_value
            assert context_id == 3 and data[0] & 0x01
            received += data[1:]
        offset += 6 + length
    assert received == command
    assert data[0] & 0x02  # the last fragment says so


def test_one_association_mixes_the_fast_path_and_pynetdicoms_services(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    ae = AE("CLINIC1")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    study = generate_uid()
    files = [fresh_copy("CT_small.dcm", tmp_path, study_uid=study) for _ in range(3)]
    assoc = ae.associate("127.0.0.1", embedded_hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        for path in files[:2]:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study
        query.NumberOfStudyRelatedInstances = ""
        answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in answers] == [0xFF00, 0x0000]
        assert int(answers[0][1].NumberOfStudyRelatedInstances) == 2
        # A refusal travels back with its reason, and the association goes on.
        wrong = pydicom.dcmread(files[2])
        del wrong.StudyInstanceUID
        refused = assoc.send_c_store(wrong)
        assert refused.Status == 0xC000 and "StudyInstanceUID" in refused.ErrorComment
        assert assoc.send_c_store(pydicom.dcmread(files[2])).Status == 0x0000
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    for path in files:
        row, _ = stored_instance(embedded_hub, pydicom.dcmread(path).SOPInstanceUID)
        assert row is not None


def test_an_abort_mid_data_set_leaves_nothing_in_the_spool(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    data, ds = _ct(tmp_path)
    assoc = associate(embedded_hub, [(CTImageStorage, ExplicitVRLittleEndian)])
    incoming = embedded_hub.data / "spool" / "incoming"
    encoded = _half_sent_store(assoc, data, ds)
    assoc.dul.socket.socket.sendall(encoded[: len(encoded) // 2 // 4102 * 4102])
    deadline = time.monotonic() + 5
    while not any(incoming.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(incoming.iterdir()), "the data set was not being spooled"
    assoc.abort()
    while any(incoming.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(incoming.iterdir()) == []
    assert_nothing_kept(embedded_hub, ds.SOPInstanceUID)


def test_a_spool_that_cannot_be_written_answers_out_of_resources(tmp_path: Path) -> None:
    hub = start_hub(tmp_path)
    try:
        incoming = hub.data / "spool" / "incoming"
        path = fresh_copy("CT_small.dcm", tmp_path / "in")
        sop_uid = pydicom.dcmread(path).SOPInstanceUID
        assoc = associate(hub, [(CTImageStorage, ExplicitVRLittleEndian)])
        try:
            incoming.rename(tmp_path / "moved")
            incoming.write_bytes(b"")  # a file where the spool folder should be
            refused = assoc.send_c_store(pydicom.dcmread(path))
            assert refused.Status == 0xA700 and "spool" in refused.ErrorComment
            incoming.unlink()
            (tmp_path / "moved").rename(incoming)
            # The same association goes on, and the same instance is then stored.
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        finally:
            assoc.release()
        row, stored = stored_instance(hub, sop_uid)
        assert row is not None and stored is not None
    finally:
        hub.proc.stop()


def test_a_store_in_tiny_fragments_several_to_a_pdu_is_kept_byte_for_byte(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    """The command set in pieces, and PDUs that carry several PDV items, one of them the end of
    the command and the start of the data set (PS3.8 allows both; few senders do it)."""
    data, ds = _ct(tmp_path)
    assoc = associate(embedded_hub, [(CTImageStorage, ExplicitVRLittleEndian)])
    try:
        message = C_STORE_RQ()
        message.primitive_to_message(store_request(ds.SOPClassUID, ds.SOPInstanceUID, data))
        cx = context_id(assoc, ds.SOPClassUID, ExplicitVRLittleEndian)
        items = [
            (len(pdv[1]) + 1).to_bytes(4, "big") + bytes([pdv[0]]) + pdv[1]
            for primitive in message.encode_msg(cx, 48)
            for pdv in primitive.presentation_data_value_list
        ]
        commands = sum(1 for item in items if item[5] & 0x01)
        assert commands > 1  # the command set itself is fragmented
        stream = b""
        for start in range(0, len(items), 3):
            body = b"".join(items[start : start + 3])
            stream += b"\x04\x00" + len(body).to_bytes(4, "big") + body
        # Hold pynetdicom's reactor, as its own send_c_*() do, or it may take the response.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        try:
            assoc.dul.socket.socket.sendall(stream)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert response is not None and response.Status == 0x0000
        assert response.AffectedSOPInstanceUID == ds.SOPInstanceUID
    finally:
        assoc.release()
    row, stored = stored_instance(embedded_hub, ds.SOPInstanceUID)
    assert row is not None and stored is not None
    assert dataset_bytes(stored) == data


def test_a_pdv_item_running_past_its_pdu_aborts_the_association(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    data, ds = _ct(tmp_path)
    assoc = associate(embedded_hub, [(CTImageStorage, ExplicitVRLittleEndian)])
    encoded = _half_sent_store(assoc, data, ds)
    first_pdu = encoded[: 6 + int.from_bytes(encoded[2:6], "big")]
    broken = bytearray(first_pdu)
    broken[6:10] = (int.from_bytes(broken[6:10], "big") + 1).to_bytes(4, "big")
    assoc.dul.socket.socket.sendall(bytes(broken))
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted  # A-ABORT, as pynetdicom answers an invalid PDU
    assert_nothing_kept(embedded_hub, ds.SOPInstanceUID)
    assert_hub_serves(embedded_hub)


def test_each_association_gets_its_own_copy_of_the_supported_contexts() -> None:
    """The cheap copy pynetdicom's acceptor set-up now uses equals a deep copy, and sharing
    nothing mutable, one association's negotiation cannot change the next one's contexts."""
    import copy

    from pynetdicom import ALL_TRANSFER_SYNTAXES
    from pynetdicom.presentation import AllStoragePresentationContexts

    from dicom.pynetdicom_tuning import _copy_contexts

    ae = AE("TELEHUB")  # the hub's contexts, without installing its patches in this process
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    contexts = ae.supported_contexts
    copied = _copy_contexts(contexts)
    assert [vars(cx) for cx in copied] == [vars(cx) for cx in copy.deepcopy(contexts)]
    copied[0].transfer_syntax = [ExplicitVRLittleEndian]
    copied[1].context_id = 7
    assert len(contexts[0].transfer_syntax) > 1 and contexts[1].context_id is None
    assert _copy_contexts({"not": ["contexts"]}) == {"not": ["contexts"]}
