"""``linepairs inspect SOURCE... [--limit N] [--json]``: how a source is read, before a build.

The library part is ``curation.sources.inspect``; this prints it. Exit 0 when every source can be
built, 1 when the build would refuse one (the reason is shown), 2 for a source that cannot be
opened at all (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError
from .storage import add_storage_option


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show how a source is read: kind, files, column mapping, first records and their verdicts",
        description="Show how each SOURCE is read: the detected kind, files and row counts, the mapping "
        "of its columns (mapped, unmapped, missing), the first records as the filters see them and the "
        "reject reason each would get. Reads only what it shows.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="[NAME=][KIND:]PATH, as for build")
    p.add_argument("--limit", type=int, default=5, help="records shown per source (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--config", help="build.toml: the filters, scan and [sidecars] settings to judge with")
    p.add_argument(
        "--archives", type=int, default=4,
        help="archives read at most to find the shown records' images (default 4)",
    )  # fmt: skip
    p.add_argument("--no-pixels", action="store_true", help="judge on metadata only (no image is read)")
    add_storage_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from curation.sources import SourceError, parse_source, with_config
    from curation.sources.inspect import inspect_source
    from curation.storage import SourceStorage
    from sharding.layout import StorageError, parse_storage_options

    from ..config import ConfigError, load_config

    if args.limit < 0 or args.archives < 1:
        raise UsageError("--limit must be >= 0 and --archives >= 1")
    try:
        config = load_config(args.config)
        storage = SourceStorage(parse_storage_options(args.storage_option))
        specs = [with_config(parse_source(s, storage=storage), config) for s in args.sources]
    except (ConfigError, SourceError, StorageError) as exc:
        raise UsageError(str(exc)) from None
    reports = [
        inspect_source(spec, config, storage, args.limit, args.archives, pixels=not args.no_pixels).to_dict()
        for spec in specs
    ]
    if args.json:
        json.dump(
            reports if len(reports) > 1 else reports[0], sys.stdout, indent=2, ensure_ascii=False, default=str
        )
        print()
    else:
        for i, report in enumerate(reports):
            if i:
                print()
            print("\n".join(lines(report)))
    return 1 if any(r["refused"] for r in reports) else 0


def _cut(text: Any, width: int) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _file_line(f: dict[str, Any]) -> str:
    what = f["what"]
    if what == "archives":
        span = f" ({f['first']} .. {f['last']})" if f.get("count") else ""
        size = f", {f['bytes'] / 2**30:.2f} GiB" if "bytes" in f else ""
        return f"{f['count']} archive(s){span}{size}"
    if "refused" in f:  # a link out of the source, a FIFO (the note says why)
        return f"{f['path']}: not read ({f['refused']})"
    if "rows" in f:
        extra = "".join(f", {k} {f[k]}" for k in ("table", "tags", "image_column") if k in f)
        return f"{f['path']}: {f['rows']:,} rows{extra}"
    if "first" in f:
        return f"{f['count']} {what} file(s), first {f['first']}"
    return f"{f['count']} {what}"


def lines(report: dict[str, Any]) -> list[str]:
    """The report as text: a header, files, mapping table(s), records table, notes."""
    out = [f"source   {report['name']} ({report['kind']}: {report['path']})"]
    for f in report["files"]:
        out.append(f"files    {_file_line(f)}")
    for m in report["mappings"]:
        out.append(f"mapping  {m['where']}")
        out.append(f"  {'column':<34} {'field':<20} read as")
        for row in m["mapped"]:
            out.append(f"  {_cut(row['column'], 34):<34} {row['field']:<20} {row['how']}")
        if m["unmapped"]:
            out.append(f"  unmapped: {_cut(', '.join(m['unmapped']), 200)}")
        if m["missing"]:
            out.append(f"  missing:  {', '.join(m['missing'])}")
    if report["refused"]:
        out.append(f"REFUSED  {report['refused']}")
    if report["records"]:
        out.append(f"records  the first {len(report['records'])}, as the filters see them")
        out.append(f"  {'key':<28} {'id':>9} {'rating':<7} {'tags':<44} {'image':<30} verdict")
        for r in report["records"]:
            tags = "; ".join(f"{c}: {t}" for c, t in r["tags"].items() if t)
            if r["caption"]:
                tags = f"{tags} | {r['caption']}" if tags else r["caption"]
            v = r["verdict"]
            verdict = v["status"] if v["status"] != "rejected" else f"{v['reason']}: {v['detail'] or ''}"
            rating = (r["rating"] or "-") + (f"/{r['rating_era']}" if r["rating_era"] else "")
            out.append(
                f"  {_cut(r['key'], 28):<28} {r['id'] if r['id'] is not None else '-':>9} {rating:<7} "
                f"{_cut(tags, 44):<44} {_cut(r['image'] or '-', 30):<30} {_cut(verdict, 90)}"
            )
    elif not report["refused"]:
        out.append("records  none")
    for note in report["notes"]:
        out.append(f"note     {note}")
    return out
