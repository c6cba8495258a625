"""firmware/lib/journal.py: the transaction-message journal's records on a real
`storage.Flash` in a temporary directory. A record is one file `<dir>/<seq as 8 digits>`:
the CRC-32 of the JSON body as 8 hex digits, a newline, the body. Round trips (written,
read back, read again after a reboot), corrupt and truncated records refused, and the
rules of the module docstring: sequence numbers never reused, the record limit, the full
flash (MeterValues dropped, StopTransaction kept in RAM, StartTransaction refused), the
probe that ends it, and the transactionId substituted when a record is sent."""

from __future__ import annotations

import binascii
import json

import pytest

from tests.unit.fwimport import load

pytestmark = pytest.mark.unit

journal = load("journal")
storage = load("storage")

START, STOP, METER = "StartTransaction", "StopTransaction", "MeterValues"
DIR = "ocpp/journal/"
START_P = {"connectorId": 1, "idTag": "CARD-1", "meterStart": 100, "timestamp": "2026-11-26T10:00:00Z"}
STOP_P = {"meterStop": 2100, "timestamp": "2026-11-26T11:00:00Z", "reason": "Local"}
METER_P = {"connectorId": 1, "meterValue": [{"timestamp": "2026-11-26T10:30:00Z",
                                             "sampledValue": [{"value": "1100"}]}]}


class RoomyFlash(storage.Flash):
    """A storage.Flash that holds at most `capacity` journal records (a write beyond that
    raises FlashFull, as the real one does on ENOSPC); None: unlimited."""

    def __init__(self, root):
        super().__init__(root)
        self.capacity = None
        self.refuse_all = False

    def write_bytes(self, name, data):
        records = [n for n in self.listdir(DIR) if n.isdigit()]
        if self.refuse_all or (self.capacity is not None and name.startswith(DIR)
                               and name[len(DIR):] not in records
                               and len(records) >= self.capacity):
            raise storage.FlashFull(28, "flash full writing " + name)
        super().write_bytes(name, data)


@pytest.fixture
def flash(tmp_path):
    return RoomyFlash(str(tmp_path))


@pytest.fixture
def logged():
    return []


def open_journal(flash, logged, **kwargs):
    return journal.Journal(flash, logged.append, **kwargs)


def test_a_record_is_a_crc_line_and_the_json_body(flash, logged):
    j = open_journal(flash, logged)
    seq = j.add(START, START_P, None, "uid-1")
    assert seq == 1
    raw = flash.read_bytes(DIR + "00000001")
    header, body = raw.split(b"\n", 1)
    assert header == b"%08x" % binascii.crc32(body)
    assert json.loads(body) == {"s": 1, "a": START, "p": START_P, "l": 1, "id": "uid-1", "n": 0}


def test_records_read_back_as_written_in_order(flash, logged):
    j = open_journal(flash, logged)
    lid = j.add(START, START_P, None, "uid-1")
    j.add(METER, METER_P, lid, "uid-2")
    j.add(STOP, STOP_P, lid, "uid-3")
    assert len(j) == 3 and j.seqs == [1, 2, 3]
    assert [j.read(s)["a"] for s in j.seqs] == [START, METER, STOP]
    assert j.read(2) == {"s": 2, "a": METER, "p": METER_P, "l": 1, "id": "uid-2", "n": 0}
    assert j.head()["s"] == 1
    j.remove(1)
    assert j.head()["s"] == 2 and len(j) == 2
    j.remove(2)
    j.remove(3)
    assert j.head() is None and len(j) == 0
    assert [n for n in flash.listdir(DIR) if n.isdigit()] == []


def test_non_ascii_and_nested_payloads_round_trip(flash, logged):
    j = open_journal(flash, logged)
    payload = {"idTag": "Müller-ÄÖÜ-€", "nested": [{"a": [1, 2.5, None, True]}], "empty": {}}
    seq = j.add(START, payload, None, "ü")
    assert j.read(seq)["p"] == payload and j.read(seq)["id"] == "ü"


def test_a_reboot_finds_the_records_and_the_transaction_ids(flash, logged):
    j = open_journal(flash, logged)
    lid = j.add(START, START_P, None, "uid-1")
    j.add(METER, METER_P, lid, "uid-2")
    j.set_txid(lid, 4711)
    rec = j.head()
    rec["n"] = 2
    j.update(rec)
    again = open_journal(flash, logged)
    assert again.seqs == [1, 2]
    assert again.head() == dict(rec, n=2)
    assert again.txids == {1: 4711}
    assert again.next_seq == 17  # from the meta file: at least 3, and no seq used twice


def test_sequence_numbers_are_never_reused_after_a_reboot_with_an_empty_journal(flash, logged):
    j = open_journal(flash, logged)
    for _ in range(3):
        j.remove(j.add(METER, METER_P, 1, "u"))
    assert [n for n in flash.listdir(DIR) if n.isdigit()] == []
    assert json.loads(flash.read_bytes(DIR + "meta")) == {"next": 17}
    j = open_journal(flash, logged)
    assert j.add(METER, METER_P, 1, "u") == 17
    assert json.loads(flash.read_bytes(DIR + "meta")) == {"next": 33}  # written at seq 17
    for _ in range(15):
        j.add(METER, METER_P, 1, "u")
    assert j.next_seq == 33 and json.loads(flash.read_bytes(DIR + "meta")) == {"next": 33}
    j.add(METER, METER_P, 1, "u")  # seq 33: the meta file moves ahead before the record
    assert json.loads(flash.read_bytes(DIR + "meta")) == {"next": 49}


def test_leftover_temporary_files_are_removed_and_other_names_ignored(flash, logged):
    j = open_journal(flash, logged)
    j.add(START, START_P, None, "u")
    flash.write_bytes(DIR + "00000002.tmp", b"half a rec")
    flash.write_bytes(DIR + "notes", b"x")
    j = open_journal(flash, logged)
    assert j.seqs == [1]
    assert not flash.exists(DIR + "00000002.tmp") and flash.exists(DIR + "notes")


# --- damaged records ---------------------------------------------------------------------

def damage(flash, seq, change):
    name = DIR + "%08d" % seq
    flash.write_bytes(name, change(flash.read_bytes(name)))


@pytest.mark.parametrize("change,why", [
    (lambda raw: raw[:-1], "CRC mismatch"),                             # cut short
    (lambda raw: raw[:20], "CRC mismatch"),
    (lambda raw: raw[:9], "CRC mismatch"),                             # header only
    (lambda raw: raw[:9] + raw[9:].replace(b"100", b"900"), "CRC mismatch"),  # one digit
    (lambda raw: raw + b" ", "CRC mismatch"),                           # a byte too many
    (lambda raw: raw[9:], "no frame header"),                           # the bare JSON
    (lambda raw: b"", "no frame header"),                               # empty
    (lambda raw: raw[:8], "no frame header"),                           # cut in the header
    (lambda raw: b"0" + raw, "no frame header"),                        # header shifted
])
def test_a_damaged_record_is_refused(flash, logged, change, why):
    j = open_journal(flash, logged)
    j.add(START, START_P, None, "u")
    damage(flash, 1, change)
    with pytest.raises(ValueError, match=why):
        j.read(1)


def test_a_header_that_is_not_hex_is_refused(flash, logged):
    j = open_journal(flash, logged)
    j.add(START, START_P, None, "u")
    damage(flash, 1, lambda raw: b"zzzzzzzz" + raw[8:])
    with pytest.raises(ValueError):
        j.read(1)


def test_a_body_that_matches_its_crc_but_is_not_json_is_refused(flash, logged):
    j = open_journal(flash, logged)
    j.add(START, START_P, None, "u")
    body = b'{"s": 1, "a": "StartTr'
    damage(flash, 1, lambda raw: b"%08x\n" % binascii.crc32(body) + body)
    with pytest.raises(ValueError):
        j.read(1)


def test_head_drops_an_unreadable_record_counts_and_logs_it(flash, logged):
    j = open_journal(flash, logged)
    j.add(START, START_P, None, "u1")
    j.add(METER, METER_P, 1, "u2")
    damage(flash, 1, lambda raw: raw[:-3])
    assert j.head()["s"] == 2
    assert j.seqs == [2] and j.dropped == 1
    assert logged == ["journal: record 1 unreadable (CRC mismatch), dropped"]
    assert not flash.exists(DIR + "00000001")


# --- transaction ids ---------------------------------------------------------------------

def test_a_records_payload_gets_the_central_systems_transaction_id(flash, logged):
    j = open_journal(flash, logged)
    lid = j.add(START, START_P, None, "u1")
    assert lid == 1
    meter_seq = j.add(METER, METER_P, lid, "u2")
    stop_seq = j.add(STOP, STOP_P, lid, "u3")
    assert j.payload_for_send(j.read(1)) == START_P  # a StartTransaction has none yet
    assert j.payload_for_send(j.read(meter_seq)) is None  # not answered yet: unknown
    j.set_txid(lid, 99)
    assert j.payload_for_send(j.read(meter_seq)) == dict(METER_P, transactionId=99)
    assert j.payload_for_send(j.read(stop_seq)) == dict(STOP_P, transactionId=99)
    j.forget_tx(lid)
    assert j.payload_for_send(j.read(stop_seq)) is None
    assert json.loads(flash.read_bytes(DIR + "txids")) == {}


def test_at_most_16_transaction_ids_are_kept_the_oldest_go_first(flash, logged):
    j = open_journal(flash, logged)
    for lid in range(1, 21):
        j.set_txid(lid, 1000 + lid)
    assert sorted(j.txids) == list(range(5, 21))
    assert open_journal(flash, logged).txids == {lid: 1000 + lid for lid in range(5, 21)}


def test_give_up_drops_the_record_and_counts_it(flash, logged):
    j = open_journal(flash, logged)
    j.add(START, START_P, None, "u1")
    j.give_up(j.head(), " after 3 attempts")
    assert len(j) == 0 and j.dropped == 1
    assert logged[-1] == "ocpp: StartTransaction #1 dropped after 3 attempts"


# --- the record limit and the full flash ---------------------------------------------------

def test_at_the_record_limit_the_oldest_meter_values_make_room(flash, logged):
    j = open_journal(flash, logged, max_records=3)
    lid = j.add(START, START_P, None, "u1")
    j.add(METER, METER_P, lid, "u2")
    j.add(METER, METER_P, lid, "u3")
    assert j.add(STOP, STOP_P, lid, "u4") == 4
    assert j.seqs == [1, 3, 4] and j.dropped == 1 and not j.full
    assert j.degraded == "journal full: dropped the oldest MeterValues"


def test_at_the_limit_without_meter_values_a_start_is_refused(flash, logged):
    j = open_journal(flash, logged, max_records=2)
    j.add(START, START_P, None, "u1")
    j.add(STOP, STOP_P, 1, "u2")
    assert j.add(START, START_P, None, "u3") is None
    assert j.full and j.seqs == [1, 2]


def test_a_full_flash_makes_room_for_a_start_by_dropping_meter_values(flash, logged):
    j = open_journal(flash, logged)
    lid = j.add(START, START_P, None, "u1")
    j.add(METER, METER_P, lid, "u2")
    j.add(STOP, STOP_P, lid, "u3")
    flash.capacity = 3
    assert j.add(START, START_P, None, "u4") == 4
    assert j.seqs == [1, 3, 4] and j.dropped == 1 and not j.full


def test_a_full_flash_drops_a_new_meter_values_and_refuses_a_start(flash, logged):
    j = open_journal(flash, logged)
    lid = j.add(START, START_P, None, "u1")
    flash.capacity = 1
    assert j.add(METER, METER_P, lid, "u2") is None
    assert j.full and j.dropped == 1 and j.seqs == [1]
    assert j.add(START, START_P, None, "u3") is None
    assert j.degraded == "flash full: StartTransaction #3 not taken"
    assert j.seqs == [1] and j.ram == []


def test_a_stop_that_cannot_be_written_is_kept_in_ram_after_the_records_on_flash(flash, logged):
    j = open_journal(flash, logged)
    lid = j.add(START, START_P, None, "u1")
    flash.capacity = 1
    seq = j.add(STOP, STOP_P, lid, "u2")
    assert seq == 2 and j.full and len(j) == 2
    assert j.degraded == "flash full: StopTransaction #2 in RAM"
    assert j.head()["a"] == START
    j.remove(1)
    assert j.head() == {"s": 2, "a": STOP, "p": STOP_P, "l": 1, "id": "u2", "n": 0}
    j.remove(2)
    assert len(j) == 0 and j.head() is None


def test_while_full_every_record_takes_the_same_way_even_if_the_flash_has_room(flash, logged):
    j = open_journal(flash, logged)
    flash.refuse_all = True
    assert j.add(STOP, STOP_P, 7, "u1") == 1
    flash.refuse_all = False
    assert j.add(STOP, STOP_P, 8, "u2") == 2  # not on flash: it would overtake the first
    assert j.seqs == [] and [r["s"] for r in j.ram] == [1, 2]
    assert j.add(START, START_P, None, "u3") is None


def test_the_full_state_ends_when_a_probe_write_succeeds_after_the_ram_is_delivered(flash, logged):
    j = open_journal(flash, logged)
    flash.refuse_all = True
    j.add(STOP, STOP_P, 1, "u1")
    flash.refuse_all = False
    assert j.recover(100) is False  # a StopTransaction still in RAM
    j.remove(1)
    flash.refuse_all = True
    assert j.recover(100) is False  # the probe fails
    flash.refuse_all = False
    assert j.recover(104.9) is False  # next probe only after PROBE_S seconds
    assert j.recover(105) is True
    assert not j.full and j.degraded is None
    assert not flash.exists(DIR + "probe")
    assert logged[-1] == "journal: flash writable again"
    assert j.add(START, START_P, None, "u2") is not None
    assert j.recover(0) is True  # not full: nothing to do
