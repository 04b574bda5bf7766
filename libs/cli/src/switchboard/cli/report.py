"""`switchboard report`: KPIs from the case service (CaseService.GetReport) as a table or CSV."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.cli.commands import operator_token
from switchboard.cli.endpoints import Endpoints
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc

KINDS = {
    name.removeprefix("REPORT_KIND_").lower(): value
    for name, value in case_pb2.ReportKind.items()
    if value
}
# Shown in the table (the CSV has every column); the rest are in --csv.
TABLE_COLUMNS = {
    "summary": ["offered", "service_level", "asa_s", "abandon_rate", "email_service_level",
                "aht_s", "fcr_rate", "csat", "fatal_error_rate", "backlog"],
}  # fmt: skip


def add_parser(sub: Any) -> None:
    r = sub.add_parser("report", help="KPIs per interval from the case service (table or CSV)")
    r.add_argument("--tenant", help="tenant (default: the embedded default's tenant)")
    r.add_argument("--kind", default="summary", choices=sorted(KINDS))
    r.add_argument("--interval", default="day", choices=["15m", "hour", "day", "week", "month"])
    r.add_argument("--from", dest="start", help="ISO date or time (default: 7 days ago)")
    r.add_argument("--to", dest="end", help="ISO date or time, exclusive (default: now)")
    r.add_argument("--group-by", action="append", default=[],
                   choices=["tenant", "queue", "channel", "agent"])  # fmt: skip
    r.add_argument("--time-zone", default="UTC", help="IANA zone for day/week/month boundaries")
    r.add_argument("--voice-threshold", type=int, default=0, help="seconds (default 20)")
    r.add_argument("--email-threshold", type=int, default=0, help="hours (default 24)")
    r.add_argument("--business-hours", action="store_true", help="email SL in business hours")
    r.add_argument("--fcr-window", type=int, default=0, help="hours (default 72)")
    r.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def parse_time(value: str, field: str) -> datetime:
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"--{field}: {value!r} is not an ISO date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def request_from(args: argparse.Namespace, now: datetime) -> case_pb2.GetReportRequest:
    start = parse_time(args.start, "from") if args.start else now - timedelta(days=7)
    end = parse_time(args.end, "to") if args.end else now
    req = case_pb2.GetReportRequest(
        kind=KINDS[args.kind],  # type: ignore[arg-type]
        interval=args.interval,
        group_by=args.group_by,
        time_zone=args.time_zone,
        voice_threshold_seconds=args.voice_threshold,
        email_threshold_hours=args.email_threshold,
        email_business_hours=args.business_hours,
        fcr_window_hours=args.fcr_window,
    )
    for field, value in (("from", start), ("to", end)):
        ts = Timestamp()
        ts.FromDatetime(value)
        getattr(req, field).CopyFrom(ts)
    return req


def _format(value: case_pb2.ReportValue, name: str, kind: str = "") -> str:
    if not value.defined:
        return "-"
    if name.endswith("_rate") or name in ("service_level", "service_level_2", "csat",
                                          "email_service_level", "availability"):  # fmt: skip
        return f"{value.value * 100:.1f}%"
    if name.endswith("_s") and kind == "agent_states":  # hours of a shift: h:mm:ss
        minutes, seconds = divmod(round(value.value), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    if name.endswith("_s"):
        return f"{value.value:.1f}s"
    return f"{value.value:g}"


def table(report: case_pb2.Report, kind: str) -> str:
    """The report as aligned text: interval start, the groups, then the headline KPIs."""
    if not report.rows:
        return "(no rows)"
    names = [v.name for v in report.rows[0].values]
    shown = [n for n in TABLE_COLUMNS.get(kind, names) if n in names]
    dims = [d for d in ("tenant", "queue", "channel", "agent") if d in report.columns]
    header = ["interval", *dims, *shown]
    lines = [header]
    for row in report.rows:
        values = {v.name: v for v in row.values}
        group = {"tenant": row.tenant, "queue": row.queue, "channel": row.channel,
                 "agent": row.agent_id}  # fmt: skip
        start = row.interval_start.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M")
        lines.append([start, *(group[d] or "-" for d in dims),
                      *(_format(values[n], n, kind) for n in shown)])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i <= len(dims) else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
        for line in lines
    )  # fmt: skip


async def run(directory: Path, args: argparse.Namespace) -> int:
    ep = Endpoints.load(directory)
    tenant = args.tenant or ep.tenant
    request = request_from(args, datetime.now(UTC))
    token = operator_token(directory, tenant)
    async with sb_grpc.channel(ep.grpc["case"], token, tls=ep.grpc_tls()) as ch:
        try:
            report = await case_pb2_grpc.CaseServiceStub(ch).GetReport(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            print(f"case: {exc.code().name}: {exc.details()}")
            return 1
    print(report.csv if args.csv else table(report, args.kind), end="" if args.csv else "\n")
    return 0
