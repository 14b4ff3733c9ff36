#!/usr/bin/env python
"""On-machine monitoring figures (`drsn-edge monitor`), all from one run of the monitor loop:

1. Run to failure (`data synth --run-to-failure`): a healthy hour, then an inner-race fault growing from
   7 to 21 mils over 10 minutes, at 0 dB and −5 dB (white Gaussian noise): false alarms in the healthy
   part, windows from onset until the state is `fault`, and the spall size then.
2. Throughput on one core (pinned), hop = window, the whole loop (windowing, sample checks, normalization,
   inference, health state, JSON lines): the int8 artifact in its runner beside PyTorch eager (float).
3. End-to-end latency, real-time replay: from the moment a window's last sample is read to its JSON line
   written and flushed, p50 / p99.
4. Alerts through a real Mosquitto that is killed (SIGKILL) and restarted mid-stream: alerts lost, order.

  drsn-edge build --target jetson-orin-nano -o build/jetson-orin-nano   # QDQ int8 ONNX (+ batch 8/32 copies)
  python benchmarks/monitor.py --model build/jetson-orin-nano [--healthy-s 3600] [--fault-s 600] [--core 0]

Without TensorRT, ONNX Runtime runs that build here; `--model build/host` measures LiteRT instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _memory_source(sig: np.ndarray, fs: float, chunk: int, name: str):
    from drsn_edge.monitor.sources import Chunk, Source

    def read(put, stop, rate):
        for i in range(0, sig.size, chunk):
            if stop.is_set():
                return
            put(Chunk(sig[i:i + chunk], time.monotonic()))

    return Source(name, fs, read)


def _generated_source(spec, name: str):
    from drsn_edge.data.run_to_failure import segments
    from drsn_edge.monitor.sources import Chunk, Source

    def read(put, stop, rate):
        for seg in segments(spec):
            if stop.is_set():
                return
            put(Chunk(seg.astype(np.float64), time.monotonic()))

    return Source(name, spec.fs, read)


class Collect:
    """Keeps the state lines; counts window lines, and those before `onset` whose own class (before
    smoothing and hysteresis) is not the healthy one."""

    def __init__(self, onset: int | None = None):
        self.states, self.windows, self.onset, self.raw_non_healthy = [], 0, onset, 0

    def write(self, text: str) -> None:
        for ln in text.splitlines():
            if '"type":"state"' in ln:
                self.states.append(json.loads(ln))
            elif '"type":"window"' in ln:
                if self.onset is not None and self.windows < self.onset and '"class":"normal"' not in ln:
                    self.raw_non_healthy += 1
                self.windows += 1


def run_to_failure(model, snr: float, healthy_s: float, fault_s: float, seed: int) -> dict:
    from drsn_edge.data.run_to_failure import RunToFailure
    from drsn_edge.monitor.run import MonitorOptions, run

    spec = RunToFailure(healthy_s=healthy_s, fault_s=fault_s, fault="IR", noise="gaussian", snr_db=snr, seed=seed,
                        fs=model.fs, block=model.window)
    onset_win = spec.onset_sample // model.window  # the first window holding fault samples
    col = Collect(onset_win)
    opts = MonitorOptions(source="run-to-failure", batch=64)
    t0 = time.perf_counter()
    summary = run(opts, col.write, lambda t: None, model=model, source=_generated_source(spec, "run to failure"))
    wall = time.perf_counter() - t0
    faults = [s for s in col.states if s["name"] == "fault"]
    false_alarms = [s for s in faults if s["i"] < onset_win]
    detected = next((s for s in faults if s["i"] >= onset_win), None)
    delay = None if detected is None else detected["i"] - onset_win + 1
    return {"snr_db": snr, "healthy_windows": onset_win, "windows": summary["counters"]["windows"],
            "false_alarms": len(false_alarms), "raw_non_healthy_windows_before_onset": col.raw_non_healthy,
            "non_healthy_states_before_onset":
                sorted({s["state"] for s in col.states if s["i"] < onset_win} - {"healthy"}),
            "detected_after_windows": delay,
            "detected_after_s": None if delay is None else delay * model.window / model.fs,
            "severity_at_detection_mils": None if detected is None else
            round(spec.severity_at(detected["i"] * model.window), 2),
            "state_at_detection": None if detected is None else detected["state"],
            "state_changes_after_onset": [s["state"] for s in col.states if s["i"] >= onset_win][:8],
            "wall_s": wall}


def throughput(model, seconds: float) -> dict:
    from drsn_edge.data.run_to_failure import RunToFailure, segments
    from drsn_edge.monitor.run import MonitorOptions, run

    spec = RunToFailure(healthy_s=seconds / 2, fault_s=seconds / 2, seed=7, fs=model.fs, block=model.window)
    sig = np.concatenate(list(segments(spec))).astype(np.float64)
    model.infer(np.zeros((64, 1, model.window), np.float32))  # warm-up
    col = Collect()
    opts = MonitorOptions(source="memory", batch=64)
    t0, c0 = time.perf_counter(), time.process_time()
    s = run(opts, col.write, lambda t: None, model=model,
            source=_memory_source(sig, model.fs, model.window * 64, "memory"))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = s["counters"]["windows"]
    # pinned to one core, the process's CPU seconds are that core's seconds: windows per CPU-second is
    # what a dedicated core gives even when other processes share it (then wall-clock figures fall)
    return {"runner": model.name, "windows": n, "wall_s": wall, "windows_per_s": n / wall, "cpu_s": cpu,
            "windows_per_cpu_s": n / cpu, "inference_windows_per_s": s["windows_per_s_inference"],
            "lines_written": col.windows}


def latency(model, seconds: float, hop: int) -> dict:
    from drsn_edge.data.run_to_failure import RunToFailure, segments
    from drsn_edge.monitor.run import MonitorOptions, run

    spec = RunToFailure(healthy_s=seconds / 2, fault_s=seconds / 2, seed=8, fs=model.fs, block=model.window)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.npy"
        np.save(path, np.concatenate(list(segments(spec))))
        sink = open(os.devnull, "w")

        def write(text):
            sink.write(text)
            sink.flush()

        opts = MonitorOptions(source=str(path), realtime=True, hop=hop)
        s = run(opts, write, lambda t: None, model=model)
    return {"runner": model.name, "hop": hop, "windows": s["counters"]["windows"], "latency_ms": s["latency_ms"]}


def mqtt_kill_restart(model, work: Path) -> dict:
    """Alternating healthy / fault recordings in real time; the broker is SIGKILLed and restarted."""
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.monitor.health import HealthConfig
    from drsn_edge.monitor.run import MonitorOptions, run
    from tests.monitor.mosquitto import Mosquitto, Subscriber

    ds = synthesize(windows_per_class=90, classes=["normal", "IR021", "OR021"], recordings_per_class=15, seed=11,
                    split=(1.0, 0.0, 0.0))
    parts = []
    for r in range(15):  # normal, fault, normal, fault …: 6 windows each
        for cls in (0, 1 + r % 2):
            idx = np.flatnonzero(ds.y == cls)[r * 6:(r + 1) * 6]
            parts.append(ds.x[idx, 0, :].reshape(-1))
    sig = np.concatenate(parts)
    np.save(work / "alternating.npy", sig)
    (work / "broker").mkdir(exist_ok=True)
    broker = Mosquitto(work / "broker").start()
    topic = "bench/pump"
    sub = Subscriber(broker.port, [topic])
    col = Collect()
    opts = MonitorOptions(source=str(work / "alternating.npy"), realtime=True, mqtt=f"{broker.url}/{topic}",
                          alert_queue=str(work / "alerts.jsonl"), health=HealthConfig(k=2, n=3, m=2), lines=False)

    def chaos():
        time.sleep(8.0)
        broker.kill()
        time.sleep(8.0)
        broker.start()

    t = threading.Thread(target=chaos)
    t.start()
    summary = run(opts, col.write, lambda text: None, model=model)
    t.join()
    sent = [s["state"] for s in col.states]
    sub.wait_for(lambda g: len({json.loads(p)["seq"] for _, p, _ in g}) >= len(sent), timeout=30)
    sub.close()
    broker.stop()
    got = [json.loads(p) for _, p, _ in sub.got]
    firsts = list({m["seq"]: m for m in got}.values())
    return {"alerts_sent": len(sent), "alerts_received_distinct": len(firsts),
            "lost": len(sent) - len([m for m in firsts if m["seq"] <= len(sent)]),
            "order_kept": [m["state"] for m in firsts] == sent,
            "repeats": len(got) - len(firsts), "repeats_marked_dup": all(
                m["dup"] for i, m in enumerate(got) if m["seq"] in {x["seq"] for x in got[:i]}),
            "broker_connections": summary["alerts"]["connections"], "left_in_queue": summary["alerts"]["pending"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Build folder or int8 artifact (e.g. build/host).")
    ap.add_argument("--float-model", default=None, help=".drsn for the PyTorch eager comparison (default: shipped).")
    ap.add_argument("--healthy-s", type=float, default=3600.0)
    ap.add_argument("--fault-s", type=float, default=600.0)
    ap.add_argument("--snr", default="0,-5")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--throughput-s", type=float, default=600.0, help="Seconds of signal for the throughput run.")
    ap.add_argument("--latency-s", type=float, default=30.0)
    ap.add_argument("--core", type=int, default=0, help="Pin to this CPU core.")
    ap.add_argument("--skip", default="", help="Comma list of parts to skip: rtf,throughput,latency,mqtt")
    ap.add_argument("--out", default=None, help="Also write the figures here (JSON).")
    a = ap.parse_args(argv)
    os.sched_setaffinity(0, {a.core})
    import torch

    torch.set_num_threads(1)
    from drsn_edge.monitor.model import load_model

    skip = set(filter(None, a.skip.split(",")))
    int8, flt = load_model(a.model), load_model(a.float_model)
    res = {"core": a.core, "runner": int8.name, "model": int8.source, "cpu": _cpu(), "load_average": os.getloadavg()}
    print(f"{res['cpu']}, core {a.core}, load average {res['load_average'][0]:.2f} on {os.cpu_count()} CPUs")
    if "throughput" not in skip:
        res["throughput"] = [throughput(int8, a.throughput_s), throughput(flt, a.throughput_s)]
        for r in res["throughput"]:
            print(f"throughput  {r['runner']:<28} {r['windows_per_cpu_s']:8.0f} windows per CPU-second end to end "
                  f"({r['windows_per_s']:.0f}/s wall clock, {r['inference_windows_per_s']:.0f}/s wall inference only, "
                  f"{r['windows']} windows, one core)")
    if "latency" not in skip:
        res["latency"] = latency(int8, a.latency_s, int8.window // 4)
        lat = res["latency"]["latency_ms"]
        print(f"latency     last sample → JSON line: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
              f"max {lat['max']:.2f} ms ({res['latency']['windows']} windows, real time, hop {int8.window // 4})")
    if "rtf" not in skip:
        res["run_to_failure"] = []
        for snr in (float(v) for v in a.snr.split(",")):
            r = run_to_failure(int8, snr, a.healthy_s, a.fault_s, a.seed)
            res["run_to_failure"].append(r)
            print(f"run to failure {snr:+.0f} dB: {r['false_alarms']} false alarms in {r['healthy_windows']} healthy "
                  f"windows ({a.healthy_s / 60:.0f} min; {r['raw_non_healthy_windows_before_onset']} of them "
                  f"classified non-healthy on their own); fault after {r['detected_after_windows']} windows "
                  f"({r['detected_after_s'] or 0:.1f} s, at {r['severity_at_detection_mils']} mils, "
                  f"{r['state_at_detection']}); other states before onset: {r['non_healthy_states_before_onset']}")
    if "mqtt" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            res["mqtt"] = m = mqtt_kill_restart(int8, Path(tmp))
        print(f"mosquitto kill/restart: {m['alerts_sent']} alerts, {m['lost']} lost, order kept: {m['order_kept']}, "
              f"{m['repeats']} repeats (all marked: {m['repeats_marked_dup']}), connections {m['broker_connections']}")
    if a.out:
        from drsn_edge.fileio import write_json

        write_json(a.out, res)
    return 0


def _cpu() -> str:
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
