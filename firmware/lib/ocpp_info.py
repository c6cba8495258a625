"""What the charge point tells the REPL, the diagnostics and DataTransfer "summary":
`pending(cp)` and `summary(cp)`. Loaded when asked and dropped again (code paging)."""


def pending(cp):
    """What waits to be sent: ["<action> #<seq>", ...] (journal first, then outbox)."""
    out = []
    for seq in cp.journal.seqs[:20]:
        try:
            out.append("%s #%d" % (cp.journal.read(seq)["a"], seq))
        except (OSError, ValueError):
            pass
    for rec in cp.journal.ram:
        out.append("%s #%d (RAM)" % (rec["a"], rec["s"]))
    for m in cp.outbox.items:
        out.append(m[0])
    return out


def summary(cp):
    con = cp.connector
    tx = con.tx
    return {"connection": cp.link.state, "registration": cp.link.registration,
            "status": con.status(), "available": con.available,
            "transaction": None if tx is None else {"id": tx.get("txid"), "local": tx["lid"],
                                                    "idTag": tx["tag"], "meterStart": tx["wh0"]},
            "limit_a": None if con.limit_a == -1 else con.limit_a,
            "queued": len(cp.journal) + len(cp.outbox.items), "journal_dropped": cp.journal.dropped,
            "journal_degraded": cp.journal.degraded, "firmware": cp.fw_version,
            "firmware_status": cp.fw_state(),
            "tls": _tls(cp)}


def _tls(cp):
    """None for ws://; "checked", "insecure" or "no CA" for wss:// (uplink.tls_mode)."""
    if not cp.link.url.startswith("wss:"):
        return None
    import uplink

    return uplink.tls_mode(cp.ocpp_conf)
