#!/usr/bin/env python3
"""Turns the records of benches/nbd/run.sh into a Markdown report (stdout) and a JSON file.

Each record is one measured fio job on one server in one round: the fio JSON output, the
server's CPU ticks and write_bytes over the job, and for uvdo its statistics after a clean
stop. Figures are medians over rounds; a ratio is the median of the per-round ratios.
"""

import argparse
import json
import os
import statistics
import subprocess

JOBS = [
    ("rr4k", "read", "4 KiB random read, QD32, data written before"),
    ("sr1m", "read", "1 MiB sequential read, QD8, data written before"),
    ("rw4k-u", "write", "4 KiB random write, QD32, unique (dedupe_percentage=0)"),
    ("rw4k-d90", "write", "4 KiB random write, QD32, dedupe_percentage=90"),
    ("rw4k-d100", "write", "4 KiB random write, QD32, dedupe_percentage=100"),
    ("sw1m-d50", "write", "1 MiB sequential write, QD8, dedupe_percentage=50"),
    ("flush32", "write", "4 KiB random write, QD32, unique, a flush every 32 writes (--fsync=32)"),
]
JOB_RW = {j: rw for j, rw, _ in JOBS}
# The share of written blocks that fio's settings make duplicates (so the saving to expect
# on a fresh volume; overwrites shift it a little).
EXPECTED_SAVING = {"rw4k-u": 0.0, "rw4k-d90": 90.0, "rw4k-d100": 100.0, "sw1m-d50": 50.0, "flush32": 0.0}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVERS = ["null", "file", "qemu", "uvdo", "uvdo-sync"]
BASELINES = ["null", "file", "qemu"]


def load_fio(path):
    text = open(path).read()
    # fio's nbd engine prints "fio: connected to NBD server" before the JSON.
    return json.loads(text[text.index("{"):])


def percentile(lat, p):
    pct = lat.get("percentile") or {}
    v = pct.get(f"{p:.6f}")
    return None if v is None else v / 1000.0


def stat_value(stats, key):
    cell = stats.get(key) or {}
    return cell.get("value")


def parse_record(fields, clk_tck):
    rnd, server, job, fio_path, ticks, wbytes, stats_path, load0, load1, wall = fields
    fio = load_fio(fio_path)
    j = fio["jobs"][0]
    rw = JOB_RW[job]
    side = j[rw]
    rec = {
        "round": int(rnd),
        "server": server,
        "job": job,
        "fio_error": j.get("error", 0),
        "iops": side["iops"],
        "mb_s": side["bw_bytes"] / 1e6,
        "ios": side["total_ios"],
        "bytes": side["io_bytes"],
        "p50_us": percentile(side["clat_ns"], 50),
        "p99_us": percentile(side["clat_ns"], 99),
        "server_cpu_s": int(ticks) / clk_tck,
        "server_write_bytes": int(wbytes),
        "load_start": load0,
        "load_end": load1,
        "wall_s": float(wall),
    }
    rec["cpu_us_per_io"] = rec["server_cpu_s"] * 1e6 / rec["ios"] if rec["ios"] else None
    rec["written_per_logical"] = (
        rec["server_write_bytes"] / rec["bytes"] if rw == "write" and rec["bytes"] else None
    )
    sync = j.get("sync") or {}
    if sync.get("total_ios"):
        rec["flushes"] = sync["total_ios"]
        rec["flush_p50_us"] = percentile(sync["lat_ns"], 50)
        rec["flush_p99_us"] = percentile(sync["lat_ns"], 99)
    if stats_path != "-":
        stats = load_fio(stats_path)
        stats = next(iter(stats.values()), {})
        data = stat_value(stats, "data blocks used")
        logical = stat_value(stats, "logical blocks used")
        rec["uvdo_data_blocks_used"] = data
        rec["uvdo_logical_blocks_used"] = logical
        rec["uvdo_saving_percent_uvdostats"] = stat_value(stats, "saving percent")
        if data is not None and logical:
            rec["saving_percent"] = 100.0 * (logical - data) / logical
    return rec


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - best effort
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--started")
    ap.add_argument("--load-start")
    ap.add_argument("--load-end")
    ap.add_argument("--elapsed", type=int)
    ap.add_argument("--smoke", type=int, default=0)
    ap.add_argument("--command")
    a = ap.parse_args()

    recs = [
        parse_record(line.rstrip("\n").split("\t"), a.clk_tck)
        for line in open(a.records)
        if line.strip()
    ]
    by = {(r["round"], r["server"], r["job"]): r for r in recs}
    rounds = sorted({r["round"] for r in recs})
    jobs = [j for j, _, _ in JOBS if any(r["job"] == j for r in recs)]

    def cell(rnd, server, job, key):
        r = by.get((rnd, server, job))
        return None if r is None else r.get(key)

    medians = {}
    for job in jobs:
        for server in SERVERS:
            rs = [r for r in recs if r["job"] == job and r["server"] == server]
            if not rs:
                continue
            keys = [k for k in rs[0] if isinstance(rs[0][k], (int, float)) and k != "round"]
            medians.setdefault(job, {})[server] = {k: med([r.get(k) for r in rs]) for k in keys}

    # Per-round ratios of throughput (IOPS; for a fixed block size MB/s gives the same).
    pairs = [("uvdo", b) for b in BASELINES] + [("uvdo-sync", "null"), ("uvdo-sync", "uvdo")]
    ratios = {}
    for job in jobs:
        for num, den in pairs:
            per_round = {}
            for rnd in rounds:
                n, d = cell(rnd, num, job, "iops"), cell(rnd, den, job, "iops")
                if n is not None and d:
                    per_round[rnd] = n / d
            if per_round:
                ratios.setdefault(job, {})[f"{num}/{den}"] = {
                    "per_round": per_round,
                    "median": med(per_round.values()),
                }
    flush_ratio = {}
    for rnd in rounds:
        n, d = cell(rnd, "uvdo", "flush32", "flush_p50_us"), cell(rnd, "file", "flush32", "flush_p50_us")
        if n is not None and d:
            flush_ratio[rnd] = n / d

    def ratio(job, key):
        return (ratios.get(job, {}).get(key) or {}).get("median")

    def medv(job, server, key):
        return (medians.get(job, {}).get(server) or {}).get(key)

    floors = []

    def floor(what, value, limit, higher_is_better, unit="x"):
        if value is None:
            verdict = "not measured"
        elif higher_is_better:
            verdict = "holds" if value >= limit else "FAILS"
        else:
            verdict = "holds" if value <= limit else "FAILS"
        floors.append({"floor": what, "measured": value, "limit": limit, "unit": unit, "verdict": verdict})

    floor("unique 4 KiB random writes, QD32: >= 0.85x nbdkit null", ratio("rw4k-u", "uvdo/null"), 0.85, True)
    floor("unique 4 KiB random writes, QD32: >= 1.0x nbdkit file", ratio("rw4k-u", "uvdo/file"), 1.0, True)
    floor("100% duplicate 4 KiB writes, QD32: >= 0.9x nbdkit null",
          ratio("rw4k-d100", "uvdo/null"), 0.9, True)
    floor("90% duplicate 4 KiB writes, QD32 (beside the SPEC's 100%): >= 0.9x nbdkit null",
          ratio("rw4k-d90", "uvdo/null"), 0.9, True)
    floor("1 MiB sequential writes, 50% duplicates: >= 1 GB/s logical",
          medv("sw1m-d50", "uvdo", "mb_s"), 1000.0, True, "MB/s")
    floor("1 MiB sequential writes, 50% duplicates: >= 0.5x nbdkit null",
          ratio("sw1m-d50", "uvdo/null"), 0.5, True)
    floor("4 KiB random reads, QD32: >= 0.85x nbdkit null", ratio("rr4k", "uvdo/null"), 0.85, True)
    floor("device writes per unique 4 KiB write <= 1.1 (server write_bytes / logical bytes, rw4k-u)",
          medv("rw4k-u", "uvdo", "written_per_logical"), 1.1, False, "B/B")
    floor("write + flush p50 <= 1.3x raw fdatasync p50 (proxy: flush p50 / nbdkit file's, flush32)",
          med(flush_ratio.values()), 1.3, False)

    nproc = os.cpu_count()
    meta = {
        "command": a.command,
        "started": a.started,
        "rounds": a.rounds,
        "seconds_per_job": a.seconds,
        "export_bytes": a.size,
        "smoke": bool(a.smoke),
        "loadavg_start": a.load_start,
        "loadavg_end": a.load_end,
        "elapsed_s": a.elapsed,
        "cpus": nproc,
        "fio": version(["fio", "--version"]),
        "nbdkit": version(["nbdkit", "--version"]),
        "qemu_nbd": version(["qemu-nbd", "--version"]),
        "git_head": version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        "uncommitted_files_under_crates": len(
            subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "crates"],
                           capture_output=True, text=True).stdout.splitlines()),
    }
    out = {
        "meta": meta,
        "runs": recs,
        "medians": medians,
        "ratios": ratios,
        "flush_p50_uvdo_over_file": {"per_round": flush_ratio, "median": med(flush_ratio.values())},
        "floors": floors,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2, sort_keys=False)
        f.write("\n")

    p = print
    p("## NBD end-to-end benchmark" + (" (SMOKE RUN: not a measurement)" if a.smoke else ""))
    p()
    p(f"Run {a.started}, {nproc} CPUs, `{a.command}`: {a.rounds} round(s), {a.seconds} s per job, "
      f"{a.size / 2**20:.0f} MiB exports; {a.elapsed} s in all.")
    p(f"/proc/loadavg at start `{a.load_start}`, at end `{a.load_end}`. {meta['fio']}, "
      f"{meta['nbdkit']}, {meta['qemu_nbd']}; uvdo built from {meta['git_head']}"
      f" with {meta['uncommitted_files_under_crates']} uncommitted file(s) under crates/.")
    p()
    p("### Medians over rounds")
    p()
    p("| job | server | IOPS | MB/s | p99 clat us | flush p50 / p99 us | server CPU s | CPU us/IO "
      "| written B / logical B | space saving % (fio implies) |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for job in jobs:
        for server in SERVERS:
            m = medians.get(job, {}).get(server)
            if m is None:
                continue
            flush = "-"
            if m.get("flush_p50_us") is not None:
                flush = f"{fmt(m['flush_p50_us'])} / {fmt(m.get('flush_p99_us'))}"
            saving = "-"
            if m.get("saving_percent") is not None:
                saving = f"{m['saving_percent']:.1f} ({EXPECTED_SAVING.get(job, 0):.0f})"
            p(f"| {job} | {server} | {fmt(m['iops'])} | {fmt(m['mb_s'])} | {fmt(m['p99_us'])} | {flush} "
              f"| {fmt(m['server_cpu_s'], 2)} | {fmt(m['cpu_us_per_io'], 1)} "
              f"| {fmt(m.get('written_per_logical'), 3)} | {saving} |")
    p()
    p("### Throughput ratios (median of per-round ratios; same for IOPS and MB/s)")
    p()
    p("| job | uvdo/null | uvdo/file | uvdo/qemu | uvdo-sync/null | uvdo-sync/uvdo |")
    p("|---|---:|---:|---:|---:|---:|")
    for job in jobs:
        cells = [fmt(ratio(job, k), 2) for k in
                 ("uvdo/null", "uvdo/file", "uvdo/qemu", "uvdo-sync/null", "uvdo-sync/uvdo")]
        p(f"| {job} | " + " | ".join(cells) + " |")
    if flush_ratio:
        p()
        p(f"flush32, uvdo flush p50 / nbdkit file flush p50: median {fmt(med(flush_ratio.values()), 2)}"
          f" (rounds: {', '.join(fmt(v, 2) for v in flush_ratio.values())}).")
    p()
    p("### Every round (IOPS; load = /proc/loadavg 1/5/15 min when uvdo's job started)")
    p()
    p("| round | job | load | null | file | qemu | uvdo | uvdo-sync | uvdo/null | uvdo/file | uvdo/qemu |")
    p("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rnd in rounds:
        for job in jobs:
            vals = [fmt(cell(rnd, s, job, "iops")) + ("!" if cell(rnd, s, job, "fio_error") else "")
                    for s in SERVERS]
            rs = [fmt((ratios.get(job, {}).get(k) or {}).get("per_round", {}).get(rnd), 2)
                  for k in ("uvdo/null", "uvdo/file", "uvdo/qemu")]
            load = cell(rnd, "uvdo", job, "load_start") or "-"
            p(f"| {rnd} | {job} | {load} | " + " | ".join(vals) + " | " + " | ".join(rs) + " |")
    p()
    p("### SPEC section 10 floors over NBD")
    p()
    p("| floor | measured | verdict |")
    p("|---|---:|---|")
    for f_ in floors:
        unit = f_["unit"]
        v = f_["measured"]
        shown = "-" if v is None else (f"{v:.2f}x" if unit == "x" else
                                       f"{v:.0f} MB/s" if unit == "MB/s" else f"{v:.3f}")
        p(f"| {f_['floor']} | {shown} | {f_['verdict']} |")
    p()
    bad = [r for r in recs if r["fio_error"]]
    if bad:
        p(f"**fio reported I/O errors** (marked ! above; their figures count only until the "
          f"errors) in {len(bad)} job(s): "
          + ", ".join(f"round {r['round']} {r['job']} on {r['server']} (errno {r['fio_error']})"
                      for r in bad)
          + ". The server logs are in target/nbd-bench-failures/.")
        p()
    p(f"JSON: {a.json}")


if __name__ == "__main__":
    main()
