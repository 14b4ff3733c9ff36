#!/usr/bin/env python3
"""drsn-edge device agent.

A self-contained script: drsn-edge copies it into a private work dir on the device and runs

    python3 agent.py <command> [<json-args-file>]

It needs only the Python standard library (3.6+, so JetPack 4 works); numpy, onnxruntime and tensorrt
are imported only by the commands that use them. It prints exactly one JSON object on stdout (anything a
library prints there is diverted to stderr) and exits 0, or 1 when the object carries "error" (then also
"error_kind": usage | input | missing_dependency | disk_full | not_implemented | internal).

Commands: info, ping, run-onnx, trt-info, build-engine, run-engine, profile-engine. To add one, write `def f(args: dict) -> dict`
and decorate it with @command("name"); raise AgentError(message, kind) for a clean failure.
Relative paths in the arguments are relative to the work dir (the agent's working directory).
"""

import errno
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

AGENT_VERSION = 1

COMMANDS = {}


def command(name):
    """Register a command function under `name`."""
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


class AgentError(Exception):
    def __init__(self, message, kind="internal", hint=None):
        Exception.__init__(self, message)
        self.kind = kind
        self.hint = hint


def one_line(text):
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------------- info

def _read_text(path, limit=4096):
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except (IOError, OSError):
        return None
    return data.replace(b"\x00", b"").decode("utf-8", "replace").strip()


def _os_release():
    text = _read_text("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _meminfo():
    text = _read_text("/proc/meminfo", 8192) or ""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split():
            out[key] = int(value.split()[0]) * 1024
    return {"total_bytes": out.get("MemTotal"), "available_bytes": out.get("MemAvailable")}


def _module_facts(name):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install failing in any other way
        return {"available": False, "version": None, "error": one_line("%s: %s" % (type(exc).__name__, exc))}
    facts = {"available": True, "version": getattr(mod, "__version__", None), "error": None}
    if name == "onnxruntime":
        try:
            facts["providers"] = list(mod.get_available_providers())
        except Exception:
            facts["providers"] = None
    return facts


def _dpkg_versions(packages):
    """{package: installed version or None}, or None when dpkg-query is not there."""
    if shutil.which("dpkg-query") is None:
        return None
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"]
                              + list(packages), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    versions = dict((p, None) for p in packages)
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] and parts[2].startswith("ii"):
            versions[parts[0].split(":")[0]] = parts[1]
    return versions


def jetson_facts():
    release = _read_text("/etc/nv_tegra_release")
    model = _read_text("/proc/device-tree/model")
    return {
        "is_jetson": bool(release) or "jetson" in (model or "").lower(),
        "nv_tegra_release": release,
        "model": model,
        "packages": _dpkg_versions(["nvidia-jetpack", "tensorrt", "nvidia-l4t-core"]),
    }


@command("info")
def info(args):
    cwd = os.getcwd()
    try:
        usage = shutil.disk_usage(cwd)
        disk = {"path": cwd, "free_bytes": usage.free, "total_bytes": usage.total}
    except OSError as exc:
        disk = {"path": cwd, "free_bytes": None, "total_bytes": None, "error": one_line(exc)}
    modules = args.get("modules") or ["numpy", "onnxruntime", "tensorrt"]
    return {
        "hostname": platform.node(),
        "os": {"system": platform.system(), "release": platform.release(), "distro": _os_release()},
        "arch": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory": _meminfo(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "disk": disk,
        "jetson": jetson_facts(),
        "modules": dict((name, _module_facts(name)) for name in modules),
    }


@command("ping")
def ping(args):
    """Liveness check; `sleep_s` (0..3600) keeps the agent busy, e.g. to test timeouts and dropped links."""
    sleep_s = float(args.get("sleep_s", 0))
    if not 0 <= sleep_s <= 3600:
        raise AgentError("sleep_s must be in 0..3600, got %r" % sleep_s, "input")
    if sleep_s:
        time.sleep(sleep_s)
    return {"pong": True, "pid": os.getpid(), "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------- run-onnx

def _require(name, hint):
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise AgentError("%s is not available on the device (%s)" % (name, one_line(exc)),
                         "missing_dependency", hint)


def _arg(args, key, kind, default=None, required=False):
    if key not in args or args[key] is None:
        if required:
            raise AgentError("missing argument '%s'" % key, "input")
        return default
    value = args[key]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise AgentError("argument '%s' must be %s, got %r" % (key, kind.__name__, value), "input")


def atomic_save_npy(np, path, array):
    """np.save to a temp file in the same folder, then rename; nothing is left on failure."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def summarize_ms(values):
    if not values:
        return None
    s = sorted(values)

    def pct(q):
        return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]

    return {"n": len(s), "mean": sum(s) / len(s), "min": s[0], "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": s[-1]}


def _load_windows(np, input_path):
    """The windows to run: a plain (never pickled) numeric .npy [N, ...]."""
    if not os.path.isfile(input_path):
        raise AgentError("file '%s' is not in the work dir" % input_path, "input")
    try:
        x = np.load(input_path, allow_pickle=False)
    except ValueError as exc:
        raise AgentError("cannot read '%s' as a plain .npy (pickled arrays are refused): %s"
                         % (input_path, one_line(exc)), "input")
    if x.dtype.kind not in "fiu" or x.ndim < 1 or len(x) == 0:
        raise AgentError("'%s' must hold a non-empty numeric array [N, ...], got %s %s"
                         % (input_path, x.dtype, list(x.shape)), "input")
    return np.ascontiguousarray(x, dtype=np.float32)


def _onnx_session(ort, model, threads, providers):
    if not os.path.isfile(model):
        raise AgentError("file '%s' is not in the work dir" % model, "input")
    available = list(ort.get_available_providers())
    missing = [p for p in providers if p not in available]
    if missing:
        raise AgentError("onnxruntime provider(s) %s not available on this device (available: %s)"
                         % (", ".join(missing), ", ".join(available)), "input")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, opts, providers=providers)
    except Exception as exc:
        raise AgentError("onnxruntime cannot load '%s': %s" % (model, one_line(exc)), "input")


def _check_shape(shape, x):
    for i, (want, got) in enumerate(zip(shape[1:], x.shape[1:])):
        if isinstance(want, int) and want > 0 and want != got:
            raise AgentError("window shape %s does not fit the model input %s (axis %d)"
                             % (list(x.shape[1:]), shape[1:], i + 1), "input")
    if len(shape) != x.ndim:
        raise AgentError("windows have %d axes, the model input has %d (%s)" % (x.ndim, len(shape), shape), "input")


def _padded(np, chunk, size):
    if len(chunk) < size:
        pad = np.zeros((size - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)
        chunk = np.concatenate([chunk, pad])
    return chunk


def extra_outputs(args, have, logits_file):
    """The optional argument extra_outputs: {output name: .npy file} of outputs to save besides the logits.
    Every name must be an output of the model (`have`) and every file a distinct one."""
    extra = args.get("extra_outputs") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                              for k, v in extra.items()):
        raise AgentError("argument 'extra_outputs' must map output names to file names", "input")
    for out_name in extra:
        if out_name not in have:
            raise AgentError("the model has no output '%s' (its outputs: %s)" % (out_name, ", ".join(have)), "input")
    files = list(extra.values()) + ([logits_file] if logits_file else [])
    if len(set(files)) != len(files):
        raise AgentError("extra_outputs name a file twice (or the logits' file): %s" % ", ".join(files), "input")
    return extra


def _timed_passes(np, session, name, x, batch, warmup, repeat, keep=(0,)):
    """Per-batch latencies (ms) over `repeat` passes after warm-up, and the first pass's outputs at the
    positions `keep` (0: the logits), one array each."""
    first = _padded(np, x[:batch], batch)
    for _ in range(warmup):
        session.run(None, {name: first})
    latencies, outs = [], [[] for _ in keep]
    clock = time.perf_counter
    for r in range(repeat):
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            feed = _padded(np, chunk, batch)
            t0 = clock()
            ys = session.run(None, {name: feed})
            latencies.append((clock() - t0) * 1000.0)
            if r == 0:
                for k, pos in enumerate(keep):
                    outs[k].append(np.asarray(ys[pos])[:len(chunk)])
    return latencies, [np.concatenate(o) for o in outs]


def _throughput_sweep(np, session, name, x, sizes, warmup, runs):
    sweep = []
    for b in sizes:
        if b < 1:
            raise AgentError("batch sizes must be at least 1, got %d" % b, "input")
        reps = -(-b // len(x))
        feed = {name: np.ascontiguousarray(np.concatenate([x] * reps)[:b])}
        for _ in range(min(warmup, 3)):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
        total_s = sum(times) / 1000.0
        sweep.append({"batch": b, "runs": runs, "latency_ms": summarize_ms(times),
                      "windows_per_s": (b * runs / total_s) if total_s > 0 else None})
    return sweep


@command("run-onnx")
def run_onnx(args):
    """Run an ONNX model over windows from an .npy with onnxruntime.

    args: model (path), input (.npy, float windows [N, ...]), output (.npy for the logits: the model's first
    output; optional), extra_outputs ({output name: .npy} of more outputs to save, e.g. {"guard_score":
    "guard_score.npy"}; optional),
    warmup (runs before timing, default 10), repeat (timed passes over the windows, default 1),
    threads (intra-op threads, default 1), providers (default ["CPUExecutionProvider"]),
    batch (for a model with a dynamic batch dimension, default 1), batch_sizes (throughput sweep for a
    dynamic batch; a static-batch model sweeps its own batch only), sweep_runs (timed runs per size, 20).
    """
    np = _require("numpy", "install numpy on the device: sudo apt-get install python3-numpy or pip3 install numpy")
    ort = _require("onnxruntime", "install onnxruntime on the device (pip3 install onnxruntime; on Jetson "
                                  "the onnxruntime-gpu wheel for your JetPack)")
    model = _arg(args, "model", str, required=True)
    input_path = _arg(args, "input", str, required=True)
    output = _arg(args, "output", str)
    warmup = _arg(args, "warmup", int, 10)
    repeat = _arg(args, "repeat", int, 1)
    threads = _arg(args, "threads", int, 1)
    sweep_runs = _arg(args, "sweep_runs", int, 20)
    providers = args.get("providers") or ["CPUExecutionProvider"]
    if warmup < 0 or repeat < 1 or threads < 0 or sweep_runs < 1:
        raise AgentError("need warmup >= 0, repeat >= 1, threads >= 0 and sweep_runs >= 1", "input")
    if not os.path.isfile(model):
        raise AgentError("file '%s' is not in the work dir" % model, "input")
    x = _load_windows(np, input_path)
    session = _onnx_session(ort, model, threads, providers)
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    static = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    _check_shape(shape, x)
    batch = static or _arg(args, "batch", int, 1)
    if batch < 1:
        raise AgentError("batch must be at least 1", "input")
    names = [o.name for o in session.get_outputs()]
    extra = extra_outputs(args, names, output)
    pairs = sorted(extra.items())  # (output name, file), one fixed order
    latencies, got = _timed_passes(np, session, inp.name, x, batch, warmup, repeat,
                                   [0] + [names.index(n) for n, _ in pairs])
    logits = got[0]
    if output:
        atomic_save_npy(np, output, logits)
    for (_, path), values in zip(pairs, got[1:]):
        atomic_save_npy(np, path, values)
    sizes = [static] if static else [int(b) for b in (args.get("batch_sizes") or [1, 2, 4, 8, 16, 32])]
    return {
        "model": model, "input": input_path, "output": output, "extra_outputs": extra, "input_name": inp.name,
        "model_input_shape": shape,
        "windows": int(len(x)), "output_shape": list(logits.shape), "batch": batch, "static_batch": static,
        "providers": session.get_providers(), "threads": threads, "warmup": warmup, "repeat": repeat,
        "latency_ms": latencies, "latency_summary_ms": summarize_ms(latencies),
        "throughput": _throughput_sweep(np, session, inp.name, x, sizes, warmup, sweep_runs),
        "onnxruntime": getattr(ort, "__version__", None), "numpy": np.__version__,
    }


# ------------------------------------------------------------------------------------- TensorRT (stubs)

def _tensorrt():
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        raise AgentError("tensorrt not available", "missing_dependency",
                         "install TensorRT's Python bindings with JetPack (python3-libnvinfer); import said: %s"
                         % one_line(exc))
    return tensorrt


def _builder():
    """trt_builder.py (uploaded next to the agent) holds the version-adaptive TensorRT code."""
    _tensorrt()
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        import trt_builder
    except ImportError as exc:
        raise AgentError("trt_builder.py is missing next to the agent: %s" % one_line(exc), "input")
    return trt_builder


@command("trt-info")
def trt_info(args):
    """TensorRT version and GPU compute capability (SM) of the device, for engine compatibility."""
    return _builder().info()


@command("build-engine")
def build_engine(args):
    """args: onnx, engine, precision, dla_core, workspace_mb, timing_cache, opt_level, strongly_typed."""
    b = _builder()
    try:
        return b.build(_arg(args, "onnx", str, required=True), _arg(args, "engine", str, required=True),
                       _arg(args, "precision", str, "int8"), args.get("dla_core"), _arg(args, "workspace_mb", int, 256),
                       args.get("timing_cache"), args.get("opt_level"), bool(args.get("strongly_typed", False)))
    except AgentError:
        raise
    except Exception as exc:
        raise AgentError("TensorRT engine build failed: %s" % one_line(exc), "build")


@command("run-engine")
def run_engine(args):
    """args: engine, input (.npy), output (.npy for the logits), warmup, logits_output (the logits' output
    name; needed when the engine has several), extra_outputs ({output name: .npy}, e.g. the guard_score)."""
    b = _builder()
    output = _arg(args, "output", str, required=True)
    extra = args.get("extra_outputs") or {}
    try:
        return b.run(_arg(args, "engine", str, required=True), _arg(args, "input", str, required=True),
                     output, _arg(args, "warmup", int, 20), _arg(args, "logits_output", str),
                     extra_outputs(args, list(extra), output))
    except AgentError:
        raise
    except b.OutputError as exc:
        raise AgentError(one_line(exc), "input")
    except Exception as exc:
        raise AgentError("TensorRT engine run failed: %s" % one_line(exc), "run")


# ------------------------------------------------------------------------------- TensorRT layer profile

TRTEXEC_JETPACK = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it (not on PATH)


def _find_trtexec(given):
    for path in (given, shutil.which("trtexec"), TRTEXEC_JETPACK):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise AgentError("trtexec not found (not on PATH, not in %s)" % TRTEXEC_JETPACK, "missing_dependency",
                     "install TensorRT with JetPack: sudo apt install nvidia-jetpack")


def _read_trtexec_json(path, what):
    try:
        with open(path, "r") as f:
            return json.load(f)
    except (IOError, OSError, ValueError) as exc:
        raise AgentError("trtexec wrote no readable %s (%s): %s" % (what, path, one_line(exc)), "run")


def trtexec_profile_command(exe, engine, iterations, warmup_ms, shapes=None):
    """TensorRT's layer profiler through trtexec: a timed run without the profiler, then a separate run with
    it (--separateProfileRun), per-layer times exported as JSON (--exportProfile) and printed (--dumpProfile),
    per-iteration times of the unprofiled run exported too (--exportTimes)."""
    cmd = [exe, "--loadEngine=" + engine, "--iterations=%d" % iterations, "--warmUp=%d" % warmup_ms, "--duration=0",
           "--separateProfileRun", "--dumpProfile", "--exportProfile=profile.json", "--exportTimes=times.json"]
    if shapes:
        cmd.append("--shapes=" + shapes)
    return cmd


@command("profile-engine")
def profile_engine(args):
    """Per-layer times of a TensorRT engine from trtexec. args: engine, iterations (100), warmup_ms (200),
    shapes (trtexec --shapes, for an engine with dynamic input shapes), trtexec (its path; default: PATH, then
    JetPack's /usr/src/tensorrt/bin). Returns trtexec's exported profile as it wrote it ([{"count": N},
    {"name", "timeMs", "averageMs", ["medianMs",] "percentage"}, ...]) and the unprofiled run's computeMs."""
    engine = _arg(args, "engine", str, required=True)
    iterations, warmup_ms = _arg(args, "iterations", int, 100), _arg(args, "warmup_ms", int, 200)
    if not os.path.isfile(engine):
        raise AgentError("file '%s' is not in the work dir" % engine, "input")
    if iterations < 1 or warmup_ms < 0:
        raise AgentError("need iterations >= 1 and warmup_ms >= 0", "input")
    exe = _find_trtexec(args.get("trtexec"))
    cmd = trtexec_profile_command(exe, engine, iterations, warmup_ms, args.get("shapes"))
    for name in ("profile.json", "times.json"):
        if os.path.exists(name):
            os.unlink(name)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=_arg(args, "timeout_s", float, 1800.0))
    except subprocess.TimeoutExpired:
        raise AgentError("trtexec did not finish within the time limit", "run")
    log = proc.stdout.splitlines()
    if proc.returncode != 0:
        errors = [ln for ln in log if "[E]" in ln or "rror" in ln] or log[-1:] or ["exit status %d" % proc.returncode]
        raise AgentError("trtexec failed: %s" % one_line(errors[0]), "run")
    times = _read_trtexec_json("times.json", "--exportTimes file")
    return {"profile": _read_trtexec_json("profile.json", "--exportProfile file"), "command": cmd, "trtexec": exe,
            "compute_ms": [t["computeMs"] for t in times if isinstance(t, dict) and "computeMs" in t],
            "packages": _dpkg_versions(["tensorrt", "libnvinfer8", "libnvinfer10"]),
            "log_tail": log[-40:]}


# ------------------------------------------------------------------------------------------------- main

def jsonable(obj):
    if isinstance(obj, dict):
        return dict((str(k), jsonable(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return jsonable(obj.tolist())
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _error(exc, kind, hint=None, detail=None):
    out = {"error": one_line(exc) or type(exc).__name__, "error_kind": kind}
    if hint:
        out["hint"] = one_line(hint)
    if detail:
        out["detail"] = detail
    return out


def dispatch(argv):
    if len(argv) not in (1, 2):
        raise AgentError("usage: agent.py <command> [<json-args-file>] (commands: %s)"
                         % ", ".join(sorted(COMMANDS)), "usage")
    name = argv[0]
    fn = COMMANDS.get(name)
    if fn is None:
        raise AgentError("unknown command '%s' (known: %s)" % (name, ", ".join(sorted(COMMANDS))), "usage")
    args = {}
    if len(argv) == 2:
        try:
            with open(argv[1], "r") as f:
                args = json.load(f)
        except (IOError, OSError, ValueError) as exc:
            raise AgentError("cannot read the JSON arguments '%s': %s" % (argv[1], one_line(exc)), "usage")
        if not isinstance(args, dict):
            raise AgentError("the JSON arguments must be an object", "usage")
    return fn(args)


def run(argv):
    """Run one command; always returns a dict (errors included)."""
    t0 = time.time()
    try:
        result = dispatch(argv)
        if not isinstance(result, dict):
            result = {"result": result}
    except AgentError as exc:
        result = _error(exc, exc.kind, exc.hint)
    except (IOError, OSError) as exc:
        full = getattr(exc, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        result = _error(exc, "disk_full" if full else "internal",
                        detail=None if full else traceback.format_exc()[-2000:])
    except MemoryError as exc:
        result = _error("out of memory: %s" % exc, "internal")
    except Exception as exc:
        result = _error("%s: %s" % (type(exc).__name__, exc), "internal", detail=traceback.format_exc()[-2000:])
    result.setdefault("command", argv[0] if argv else None)
    result["agent_version"] = AGENT_VERSION
    result["agent_wall_s"] = time.time() - t0
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # The JSON object must be alone on stdout: point fd 1 at stderr while the command runs.
    try:
        sys.stdout.flush()
        out_fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        out_fd = None
    try:
        result = run(argv)
        try:
            text = json.dumps(jsonable(result), allow_nan=False)
        except (TypeError, ValueError) as exc:
            result = _error("result is not JSON: %s" % exc, "internal")
            text = json.dumps(result)
    finally:
        sys.stdout.flush()
        if out_fd is not None:
            os.dup2(out_fd, 1)
            os.close(out_fd)
    data = (text + "\n").encode("utf-8")
    while data:
        n = os.write(1, data)
        data = data[n:]
    return 1 if result.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
