"""The benchmark's reference line: a bare OCPP 1.6 central system built on the published
`ocpp` package, answering every charge-point-initiated message and storing nothing.

    python -m tools.bench.reference_cs --host 127.0.0.1 --port 9100

It validates only what the `ocpp` package validates by itself (its bundled 1.6 schemas).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
from datetime import UTC, datetime

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, DataTransferStatus, RegistrationStatus

HEARTBEAT_S = 300


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BareChargePoint(ChargePoint):
    transaction_ids = itertools.count(1)

    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor, charge_point_model, **_):
        return call_result.BootNotification(current_time=now_iso(), interval=HEARTBEAT_S,
                                            status=RegistrationStatus.accepted)

    @on(Action.heartbeat)
    def on_heartbeat(self):
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, connector_id, error_code, status, **_):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start(self, connector_id, id_tag, meter_start, timestamp, **_):
        return call_result.StartTransaction(transaction_id=next(self.transaction_ids),
                                            id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.stop_transaction)
    def on_stop(self, meter_stop, timestamp, transaction_id, **_):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, connector_id, meter_value, **_):
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id, **_):
        return call_result.DataTransfer(status=DataTransferStatus.accepted)

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, status):
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, status):
        return call_result.DiagnosticsStatusNotification()


async def on_connect(websocket):
    path = websocket.request.path
    cp_id = path.rstrip("/").rsplit("/", 1)[-1]
    if websocket.subprotocol != "ocpp1.6":
        await websocket.close(1002, "ocpp1.6 required")
        return
    try:
        await BareChargePoint(cp_id, websocket).start()
    except websockets.ConnectionClosed:
        pass


async def serve(host: str, port: int, ready=None) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(on_connect, host, port, subprotocols=["ocpp1.6"],
                                ping_interval=None, max_queue=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"reference central system on ws://{host}:{bound}/ocpp", flush=True)
        if ready:
            ready(bound)
        await stop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args(argv)
    logging.getLogger("ocpp").setLevel(logging.ERROR)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
