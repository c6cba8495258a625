"""OCPP 1.6 Local Auth List Management and the authorization cache.

The local list (SendLocalList full/differential with version numbers, GetLocalListVersion)
and the cache (Authorize / StartTransaction answers, ClearCache) are persisted in
`ocpp/locallist.json` and `ocpp/authcache.json`. Entries are kept compactly as
`idTag -> [status, expiry_unix_or_0, parentIdTag_or_None]`; both are bounded
(LocalAuthListMaxLength, CACHE_MAX with the oldest entry evicted). Authorising an idTag
(online, local list, cache, offline rules) lives here too: the module is loaded when a
card is presented or an idTagInfo arrives and dropped again when idle (its state is on
flash).
"""

import asyncio

import clock as clock_mod
import ocpp_rpc

CACHE_MAX = 24


def _entry(info):
    if not isinstance(info, dict):
        raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "idTagInfo must be an object")
    ocpp_rpc.check(info, {"status": "!e:Accepted|Blocked|Expired|Invalid|ConcurrentTx",
                          "expiryDate": "t", "parentIdTag": "s20"}, "idTagInfo.")
    expiry = int(clock_mod.parse_iso(info["expiryDate"])) if "expiryDate" in info else 0
    return [info["status"], expiry, info.get("parentIdTag")]


def id_tag_info(entry):
    out = {"status": entry[0]}
    if entry[1]:
        out["expiryDate"] = clock_mod.iso(entry[1])
    if entry[2]:
        out["parentIdTag"] = entry[2]
    return out


def _arm(cp, tag, parent):
    """An authorised tag: arm the connector unless a reservation holds it for another
    idTag (and another parent idTag)."""
    if cp.resv_matches(tag, parent):
        cp.connector.arm(tag, parent)
    else:
        cp.log("ocpp: %s not authorised (connector reserved)" % tag)


class LocalAuth:
    HANDLERS = {
        "SendLocalList": ("send_local_list", {"listVersion": "!i", "localAuthorizationList": "a",
                                              "updateType": "!e:Differential|Full"}),
        "GetLocalListVersion": ("get_local_list_version", {}),
        "ClearCache": ("clear_cache_call", {}),
    }

    def __init__(self, cp):
        self.cp = cp
        self.flash = cp.flash
        self.version = 0
        self.list = {}
        self.cache = {}
        self.cache_order = []
        try:
            raw = self.flash.read_json("ocpp/locallist.json")
            self.version = raw["v"]
            self.list = raw["l"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        try:
            self.cache = self.flash.read_json("ocpp/authcache.json")
            self.cache_order = list(self.cache)
        except (OSError, ValueError):
            self.cache = {}

    def _save_list(self):
        self.flash.makedirs("ocpp")
        self.flash.write_json("ocpp/locallist.json", {"v": self.version, "l": self.list})

    def _save_cache(self):
        try:
            self.flash.makedirs("ocpp")
            self.flash.write_json("ocpp/authcache.json", self.cache)
        except OSError:
            pass

    def _valid(self, entry):
        if entry[0] != "Accepted":
            return False
        return not entry[1] or not self.cp.clock.synced or entry[1] > self.cp.clock.now()

    def lookup(self, tag):
        """(source, entry) from the local list first, then the cache; (None, None)."""
        cfg = self.cp.cfg
        if cfg.get("LocalAuthListEnabled") and tag in self.list:
            return "list", self.list[tag]
        if cfg.get("AuthorizationCacheEnabled") and tag in self.cache:
            entry = self.cache[tag]
            if entry[0] == "Accepted" and not self._valid(entry):
                entry = ["Expired", entry[1], entry[2]]
            return "cache", entry
        return None, None

    def accepted_locally(self, tag):
        src, entry = self.lookup(tag)
        return entry is not None and self._valid(entry)

    def known(self, tag):
        return self.lookup(tag)[1] is not None

    def remember(self, tag, info):
        """Update the cache from an idTagInfo the central system sent."""
        if not self.cp.cfg.get("AuthorizationCacheEnabled") or not isinstance(info, dict):
            return
        try:
            entry = _entry(info)
        except ocpp_rpc.CallError:
            return
        if tag in self.list:
            return  # the local list has priority; the cache does not shadow it
        if tag in self.cache_order:
            self.cache_order.remove(tag)
        self.cache[tag] = entry
        self.cache_order.append(tag)
        while len(self.cache_order) > CACHE_MAX:
            del self.cache[self.cache_order.pop(0)]
        self._save_cache()

    def authorize(self, tag):
        """Authorise `tag` (a card, RemoteStartTransaction): a coroutine that arms the
        connector or refuses (it does not hold this object across its await: paging.py)."""
        return _authorize(self.cp, tag)

    def local_start(self, id_tag):
        cp = self.cp
        tx = cp.connector.tx
        if tx is not None:
            if id_tag == tx["tag"] or (tx.get("parent") and
                                       (self.lookup(id_tag)[1] or (0, 0, 0))[2] == tx["parent"]):
                cp.connector.stop_transaction("Local", id_tag)
                return "stopping"
            return "busy"
        if cp.journal.full:  # the full-flash rule (journal.py): no new transactions
            cp.log("ocpp: transaction for %s refused: flash full" % id_tag)
            return "unavailable"
        asyncio.create_task(self.authorize(id_tag))
        return "authorizing"

    def clear_cache(self):
        self.cache = {}
        self.cache_order = []
        self._save_cache()
        return "Accepted"

    def clear_cache_call(self, p):
        return {"status": self.clear_cache()}

    def send_local_list(self, p):
        cfg = self.cp.cfg
        if not cfg.get("LocalAuthListEnabled"):
            return {"status": "NotSupported"}
        entries = p.get("localAuthorizationList") or []
        if len(entries) > cfg.get("SendLocalListMaxLength"):
            return {"status": "Failed"}
        parsed = []
        for item in entries:
            ocpp_rpc.check(item, {"idTag": "!s20", "idTagInfo": "o"}, "localAuthorizationList.")
            parsed.append((item["idTag"], _entry(item["idTagInfo"]) if "idTagInfo" in item else None))
        version = p["listVersion"]
        if p["updateType"] == "Full":
            new = {}
            for tag, entry in parsed:
                if entry is not None:
                    new[tag] = entry
        else:
            if version <= self.version:
                return {"status": "VersionMismatch"}
            new = dict(self.list)
            for tag, entry in parsed:
                if entry is None:
                    new.pop(tag, None)
                else:
                    new[tag] = entry
        if len(new) > cfg.get("LocalAuthListMaxLength"):
            return {"status": "Failed"}
        self.list = new
        self.version = version if new or p["updateType"] == "Differential" else version
        try:
            self._save_list()
        except OSError:
            return {"status": "Failed"}
        return {"status": "Accepted"}

    def get_local_list_version(self, p):
        if not self.cp.cfg.get("LocalAuthListEnabled"):
            return {"listVersion": -1}
        return {"listVersion": self.version if self.list else 0}


async def _authorize(cp, tag):
    cfg = cp.cfg
    auth = cp.feature("auth")
    entry = auth.lookup(tag)[1]
    if entry is not None and cfg.get("LocalPreAuthorize") and auth.accepted_locally(tag):
        _arm(cp, tag, entry[2])
        return
    auth = None  # paging's rule: not held across the await
    if cp.link.online.is_set():
        try:
            res = await cp.link.call("Authorize", {"idTag": tag})
        except (ocpp_rpc.CallError, OSError, asyncio.TimeoutError) as exc:
            res = None
            cp.log("ocpp: Authorize failed: %r" % (exc,))
        if res is not None:
            info = res.get("idTagInfo") or {}
            cp.feature("auth").remember(tag, info)
            if info.get("status") == "Accepted":
                _arm(cp, tag, info.get("parentIdTag"))
            else:
                cp.log("ocpp: %s not authorised (%s)" % (tag, info.get("status")))
            return
    # offline
    auth = cp.feature("auth")
    entry = auth.lookup(tag)[1]
    if entry is not None:
        if cfg.get("LocalAuthorizeOffline") and auth.accepted_locally(tag):
            _arm(cp, tag, entry[2])
        else:
            cp.log("ocpp: %s refused offline (%s)" % (tag, entry[0]))
    elif cfg.get("AllowOfflineTxForUnknownId"):
        _arm(cp, tag, None)
    else:
        cp.log("ocpp: %s unknown and offline: refused" % tag)


Feature = LocalAuth  # what chargepoint.ChargePoint.feature() builds
