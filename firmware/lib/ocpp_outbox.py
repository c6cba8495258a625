"""The outbox: what the charge point sends of its own accord, one CALL at a time while
the link is online. Two queues: a small bounded one in RAM for messages that may be lost
(StatusNotification, Heartbeat, triggered messages, firmware statuses), and the
transaction journal on flash (journal.py: Start/StopTransaction and their MeterValues,
sent in order, never dropped unanswered).

    outbox = Outbox(cp)
    outbox.add(action, payload, on_result=None, barrier=False)
    outbox.add_status(cid, payload)     # replaces a queued StatusNotification of cid
    outbox.has(action); outbox.items    # [[action, payload, on_result, barrier seq], ...]
    outbox.drop_stale()                 # the link went down: statuses are sent again fresh
    await outbox.run()                  # the sender, forever

A message queued with `barrier` waits until the journal's messages queued before it are
delivered (a status must not overtake the StartTransaction that caused it)."""

import asyncio

from micropython import const
from ocpp_rpc import CallError

_MAX = const(8)


class Outbox:
    def __init__(self, cp):
        self.cp = cp
        self.items = []
        self.wake = asyncio.Event()  # set by ChargePoint.poke() and its 1 s beat

    def add(self, action, payload, on_result=None, barrier=False):
        """Queue a non-transaction message (bounded; the oldest is dropped when full)."""
        if len(self.items) >= _MAX:
            self.items.pop(0)
        self.items.append([action, payload, on_result,
                           self.cp.journal.next_seq - 1 if barrier else 0])
        self.wake.set()

    def add_status(self, cid, payload):
        for m in self.items:  # a newer status replaces a queued one
            if m[0] == "StatusNotification" and m[1]["connectorId"] == cid:
                self.items.remove(m)
                break
        self.add("StatusNotification", payload, None, True)

    def has(self, action):
        for m in self.items:
            if m[0] == action:
                return True
        return False

    def drop_stale(self):
        """The link went down: a status is sent fresh when it is back, a heartbeat anew."""
        self.items = [m for m in self.items if m[0] not in ("StatusNotification", "Heartbeat")]

    def _next(self):
        j = self.cp.journal
        head = j.seqs[0] if j.seqs else None
        for m in self.items:
            if m[3] and head is not None and head <= m[3]:
                continue  # wait for the transaction messages queued before it
            return m
        return None

    async def run(self):
        online = self.cp.link.online
        while True:
            if not online.is_set():
                await online.wait()
            m = self._next()
            if m is not None:
                await self._send(m)
                continue
            rec = self.cp.journal.head()
            if rec is not None:
                await self._deliver(rec)
                continue
            self.wake.clear()
            await self.wake.wait()  # poke() or the 1 s beat

    async def _send(self, m):
        self.items.remove(m)
        try:
            res = await self.cp.link.call(m[0], m[1])
            if m[2] is not None:
                m[2](res)
        except CallError as exc:
            self.cp.log("ocpp: %s answered %s" % (m[0], exc.code))
            if m[2] is not None:
                m[2](None)
        except (OSError, asyncio.TimeoutError):
            if m[0] != "Heartbeat" and len(self.items) < _MAX:
                self.items.insert(0, m)
            await asyncio.sleep(1)

    async def _deliver(self, rec):
        """One journal record: sent, answered (then removed), retried or given up."""
        cp = self.cp
        j = cp.journal
        payload = j.payload_for_send(rec)
        if payload is None:
            j.give_up(rec, ": its StartTransaction never got a transactionId")
            return
        try:
            res = await cp.link.call(rec["a"], payload, uid=rec["id"])
        except asyncio.TimeoutError:
            # no answer is not a "failure to process" (OCPP 1.6 3.7.1: that is a CALLERROR):
            # the message may not even have arrived, so it is not an attempt used up (a
            # long outage would otherwise drop a StopTransaction); sent again, same id
            cp.log("ocpp: %s #%d not answered, sending it again" % (rec["a"], rec["s"]))
            await asyncio.sleep(1)
            return
        except CallError as exc:
            rec["n"] += 1
            what = exc.code
            if rec["n"] >= cp.cfg.get("TransactionMessageAttempts"):
                j.give_up(rec, " after %d attempts (%s)" % (rec["n"], what))
                return
            j.update(rec)
            cp.log("ocpp: %s #%d attempt %d failed (%s)" % (rec["a"], rec["s"], rec["n"], what))
            await asyncio.sleep(cp.cfg.get("TransactionMessageRetryInterval") * rec["n"])
            return
        except OSError:
            await asyncio.sleep(1)
            return
        action = rec["a"]
        if action == "StartTransaction":
            txid = res.get("transactionId")
            if isinstance(txid, int):
                j.set_txid(rec["l"], txid)  # for the journaled messages that follow
            cp.connector.started(rec["l"], txid, (res.get("idTagInfo") or {}).get("status"))
        elif action == "StopTransaction":
            j.forget_tx(rec["l"])
        if action != "MeterValues" and "idTagInfo" in res and "idTag" in rec["p"]:
            cp.feature("auth").remember(rec["p"]["idTag"], res["idTagInfo"])  # the cache
        j.remove(rec["s"])
