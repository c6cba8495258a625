"""The persistent transaction-message journal.

StartTransaction, StopTransaction and transaction MeterValues are written to flash before
they are sent, one file per message (`<dir>/<seq>`), each written atomically (temp file +
rename, `storage.Flash`) and framed with a CRC-32 line, so a power cut leaves a record
whole or absent. The sender delivers the oldest record, waits for the central system's
answer and only then removes it: delivery is in order, and a record is resent after an
outage or a reboot until it was answered. A resent record keeps its OCPP message id, so
the central system can recognise a redelivery (the only duplicate possible is a record
whose answer arrived in the few milliseconds before a power cut, before its removal).

Transaction ids: a transaction is known locally by `lid` (the sequence number of its
StartTransaction). Records of that transaction carry `lid`; when the StartTransaction is
answered the central system's transactionId is stored in `<dir>/txids` and substituted
into later records when they are sent, so a StopTransaction queued before the
StartTransaction was answered still carries the real transactionId.

Capacity: the journal holds at most `max_records` records; at the limit the oldest
MeterValues record is dropped to make room for any new record.

A full flash, defined rule (a write fails with FlashFull or another OSError):
- to make room for a Start/StopTransaction the oldest MeterValues records are dropped and
  the write is tried again; a new MeterValues record is dropped instead (no churn);
- a record that still cannot be written: a MeterValues is dropped; a StopTransaction is
  kept in RAM and never dropped (sent in order after the records on flash, lost only by a
  power cut); a StartTransaction is refused (`add` returns None) and the charge point
  does not start that transaction: no energy flows without a persisted StartTransaction;
- from then on the journal is `full`: every new record takes the same way (a record on
  flash never overtakes one in RAM), the charge point refuses new transactions and
  reports it (StatusNotification Faulted, errorCode OtherError, info "flash full:
  journal", on connector 0 at once and on connector 1 when no transaction runs); a running
  transaction goes on;
- `recover(now)`, called by the control tick, probes the flash every PROBE_S seconds once
  the RAM records are delivered; a record-sized write that succeeds ends the state.
Records already on flash are only ever dropped by the rules above (MeterValues for room)
or after TransactionMessageAttempts CALLERRORs (`give_up`). Every drop is logged and
counted in `dropped`; `degraded` says what happened last (None once recovered).
"""

import binascii
import json

from storage import FlashFull

PROBE_S = 5
START = "StartTransaction"
STOP = "StopTransaction"
METER = "MeterValues"


class Journal:
    def __init__(self, flash, log=print, directory="ocpp/journal", max_records=120):
        self.flash = flash
        self.log = log
        self.dir = directory + "/"
        self.max_records = max_records
        flash.makedirs(directory)
        self.seqs = []  # sequence numbers on flash, oldest first (ints, bounded)
        self.ram = []  # StopTransactions that could not be written (one per transaction)
        self.dropped = 0
        self.degraded = None
        self.full = False  # a record was not taken: no new transactions (see above)
        self.probe_at = 0
        self.txids = {}
        for name in flash.listdir(directory):
            if name.isdigit():
                self.seqs.append(int(name))
            elif name.endswith(".tmp"):
                flash.remove(self.dir + name)
        self.seqs.sort()
        try:
            raw = flash.read_json(self.dir + "txids")
            for key in raw:
                self.txids[int(key)] = raw[key]
        except (OSError, ValueError):
            pass
        self.next_seq = (self.seqs[-1] + 1) if self.seqs else 1
        try:
            meta = flash.read_json(self.dir + "meta")
            self.next_seq = max(self.next_seq, int(meta.get("next", 1)))
        except (OSError, ValueError):
            pass

    def __len__(self):
        return len(self.seqs) + len(self.ram)

    def _name(self, seq):
        return self.dir + "%08d" % seq

    def _write(self, seq, rec):
        text = json.dumps(rec).encode()
        self.flash.write_bytes(self._name(seq), b"%08x\n" % (binascii.crc32(text) & 0xFFFFFFFF) + text)

    def _drop_oldest_meter(self):
        for seq in self.seqs:
            try:
                rec = self.read(seq)
            except (OSError, ValueError):
                rec = None
            if rec is None or rec["a"] == METER:
                self.remove(seq)
                self.dropped += 1
                self.degraded = "journal full: dropped the oldest MeterValues"
                self.log("journal: full, dropped MeterValues record %d" % seq)
                return True
        return False

    def _store(self, seq, rec):
        """Write a record to flash: True, or False when it cannot be written (rule above)."""
        meter = rec["a"] == METER
        for _ in range(4):
            if len(self.seqs) >= self.max_records and not self._drop_oldest_meter():
                return False
            try:
                self._write(seq, rec)
                self.seqs.append(seq)
                return True
            except OSError as exc:
                if meter or not (isinstance(exc, FlashFull) and self._drop_oldest_meter()):
                    if not isinstance(exc, FlashFull):
                        self.log("journal: write failed: %s" % exc)
                    return False
        return False

    def add(self, action, payload, lid, uid):
        """Journal a transaction message; its sequence number, or None when it was not
        taken (a MeterValues dropped, a StartTransaction refused: see the full-flash rule)."""
        seq = self.next_seq
        self.next_seq += 1
        if seq % 16 == 1:
            try:
                self.flash.write_json(self.dir + "meta", {"next": seq + 16})
            except OSError:
                pass
        if lid is None:
            lid = seq  # a StartTransaction names its transaction
        rec = {"s": seq, "a": action, "p": payload, "l": lid, "id": uid, "n": 0}
        if not self.full and self._store(seq, rec):
            return seq
        self.full = True
        if action == STOP:
            self.ram.append(rec)
        elif action == METER:
            self.dropped += 1
        self.degraded = "flash full: %s #%d %s" % (action, seq, "in RAM" if action == STOP else "not taken")
        self.log("journal: " + self.degraded)
        return seq if action == STOP else None

    def recover(self, now):
        """While `full`: probe the flash (every PROBE_S s, once the RAM records are
        delivered); True once it takes a record-sized write again."""
        if not self.full:
            return True
        if self.ram or now < self.probe_at or len(self.seqs) >= self.max_records:
            return False
        self.probe_at = now + PROBE_S
        try:
            self.flash.write_bytes(self.dir + "probe", bytes(512))
        except OSError:
            return False
        self.flash.remove(self.dir + "probe")
        self.full = False
        self.degraded = None
        self.log("journal: flash writable again")
        return True

    def read(self, seq):
        raw = self.flash.read_bytes(self._name(seq))
        body = raw[9:]
        if raw.find(b"\n") != 8:
            raise ValueError("no frame header")
        if int(raw[:8], 16) != binascii.crc32(body) & 0xFFFFFFFF:
            raise ValueError("CRC mismatch")
        return json.loads(body)

    def head(self):
        """The oldest record (dict with s, a, p, l, id, n) or None. Unreadable records
        (cannot happen with atomic writes, but flash can rot) are dropped and logged."""
        while self.seqs:
            seq = self.seqs[0]
            try:
                return self.read(seq)
            except (OSError, ValueError) as exc:
                self.log("journal: record %d unreadable (%s), dropped" % (seq, exc))
                self.remove(seq)
                self.dropped += 1
        if self.ram:
            return self.ram[0]
        return None

    def remove(self, seq):
        if seq in self.seqs:
            self.flash.remove(self._name(seq))
            self.seqs.remove(seq)
            return
        for rec in self.ram:
            if rec["s"] == seq:
                self.ram.remove(rec)
                return

    def give_up(self, rec, why):
        """Drop a record the central system would not take (TransactionMessageAttempts
        used up, or its StartTransaction never got a transactionId): logged, counted."""
        self.remove(rec["s"])
        self.dropped += 1
        self.log("ocpp: %s #%d dropped%s" % (rec["a"], rec["s"], why))

    def update(self, rec):
        """Persist a changed record (its attempt count)."""
        if rec["s"] in self.seqs:
            try:
                self._write(rec["s"], rec)
            except OSError:
                pass

    def set_txid(self, lid, txid):
        self.txids[lid] = txid
        self._save_txids()

    def forget_tx(self, lid):
        if lid in self.txids:
            del self.txids[lid]
            self._save_txids()

    def _save_txids(self):
        while len(self.txids) > 16:  # bounded: transactions long finished
            del self.txids[min(self.txids)]
        try:
            out = {}
            for lid in self.txids:
                out[str(lid)] = self.txids[lid]
            self.flash.write_json(self.dir + "txids", out)
        except OSError as exc:
            self.log("journal: cannot save transaction ids: %s" % exc)

    def payload_for_send(self, rec):
        """The payload to send, with the real transactionId; None if it is unknown (the
        StartTransaction of this transaction was dropped)."""
        p = rec["p"]
        if rec["a"] == START:
            return p
        txid = self.txids.get(rec["l"])
        if txid is None:
            return None
        p["transactionId"] = txid
        return p
