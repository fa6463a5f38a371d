"""The GPU check: what the classifier does on a CUDA device, measured where one is lent (`scripts/gpu_check.sh`
runs it there; CI and `listings bench` never need a GPU).

Three parts, each written to the JSON as soon as it is done, so a part that fails or runs out of time leaves
the others:
- `encoder`: the network's forward pass (MiniLM-L6 + our heads, pretrained encoder, untrained heads) in fp32,
  TF32, fp16 and bf16 at the row counts and token lengths the classifier sends; rows per second. Needs no
  trained model.
- `train`: the default `listings train` on the device (`--device cuda`), wall time and the report's figures
  next to the baseline of the same run.
- `serve`: the trained version folder through the served code (`classifier.py`, as a Triton instance runs it)
  per engine on the device, cascade off and on, at request sizes 64 / 256 / 1024; titles per second, call
  latency, each call's time in the engine, the tokenizer and the linear part, and top-1 agreement with torch
  fp32 on the same device. torch runs with its default CPU threads and with the instance's `cpu_threads`.
  Plus which engine `model.py` picks on a KIND_GPU instance (its `initialize()` with Triton's instance
  arguments; no tritonserver in this check).

`python -m devtools.bench.gpu plot FILE.json` draws the PNG from the JSON (here, after the run)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devtools.stats import percentile
from training.config import SERVING_DIR

ENCODER_ROWS = (64, 256, 1024)
ENCODER_TOKENS = (40, 96)  # titles only / with descriptions (training's MAX_LEN)
REQUEST_ROWS = (64, 256, 1024)
# 8,192 in the first check (bench/gpu/gpu.json); the serve part now measures 8 configurations instead of 6, and
# at 8,192 the whole check (~590 s) would not fit one 10-minute device call beside the training
SERVE_TITLES = 4096


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "cuda_version": torch.version.cuda}
    try:
        import onnxruntime as ort

        info |= {"onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers()}
    except ImportError:
        info["onnxruntime"] = None
    return info


def timed(fn: Callable[[], Any], sync: Callable[[], None], min_seconds: float = 1.0) -> tuple[float, int]:
    """Seconds per call of `fn` (after 3 warm-up calls), repeated for at least `min_seconds`."""
    for _ in range(3):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 5 and time.perf_counter() - t0 >= min_seconds:
            break
    sync()
    return (time.perf_counter() - t0) / n, n


def encoder_speed(encoder_dir: Path, device: str = "cuda") -> list[dict[str, Any]]:
    """Forward passes of the network per precision x rows x tokens on `device` (random token ids, full mask)."""
    import torch

    sys.path.insert(0, str(SERVING_DIR))
    import network

    net = network.build(encoder_dir, 300, [30, 100], 60).to(device).eval()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = []
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        model = net.to(dtype)
        for tokens in ENCODER_TOKENS:
            for rows in ENCODER_ROWS:
                ids = torch.randint(1000, 30000, (rows, tokens), device=device)
                mask = torch.ones_like(ids)
                with torch.inference_mode():
                    per_call, calls = timed(lambda m=model, i=ids, k=mask: m(i, k), sync, 0.5)
                out.append(
                    {
                        "precision": precision,
                        "tokens": tokens,
                        "rows": rows,
                        "ms_per_call": round(per_call * 1000, 2),
                        "rows_per_s": round(rows / per_call, 1),
                        "calls": calls,
                    }
                )
                print(f"encoder {precision} {rows}x{tokens}: {rows / per_call:,.0f} rows/s", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def titles_from(data_dir: Path, n: int) -> list[str]:
    """The first `n` distinct titles of the example catalogue's category file (Flipkart), in file order (as a live
    topic would bring them), read as training reads it."""
    from training import dataset
    from training.train import default_data

    rows = dataset.read(default_data(data_dir).categories, categories=True)
    return list(dict.fromkeys(r.title for r in rows))[:n]


def fake_pb_utils() -> types.ModuleType:
    """Just enough of Triton's `triton_python_backend_utils` for `model.py`'s `initialize()` to run outside
    Triton (it only logs there)."""
    mod = types.ModuleType("triton_python_backend_utils")
    lines: list[str] = []
    mod.Logger = types.SimpleNamespace(log_info=lines.append, log_warn=lines.append)  # type: ignore[attr-defined]
    mod.logged = lines  # type: ignore[attr-defined]
    return mod


def load_model_py(path: Path, name: str) -> types.ModuleType:
    """`model.py` as Triton's python backend loads it, with `fake_pb_utils()` in place of Triton's module."""
    sys.modules.setdefault("triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def config_parameters() -> dict[str, str]:
    """config.pbtxt's string parameters (engine, cascade, cpu_threads, ...): key -> value."""
    return dict(
        re.findall(r'key: "(\w+)", value: \{ string_value: "([^"]*)"', (SERVING_DIR / "config.pbtxt").read_text())
    )


def gpu_instance_choice(folder: Path) -> dict[str, Any]:
    """What `model.py` serves on a KIND_GPU instance: its `initialize()` with the arguments Triton gives a GPU
    instance and the parameters of the GPU config (`listings train --gpu-config`)."""
    mod = load_model_py(folder / "model.py", "listing_classifier_model_py")
    logged = sys.modules["triton_python_backend_utils"].logged  # type: ignore[attr-defined]
    params = config_parameters()
    config = {"parameters": {k: {"string_value": v} for k, v in params.items()}}
    model = mod.TritonPythonModel()
    args = {"model_config": json.dumps(config), "model_instance_kind": "GPU", "model_instance_device_id": "0"}
    try:
        model.initialize(args)
    except Exception as exc:  # noqa: BLE001 - the answer is what happened
        return {"parameters": params, "error": repr(exc)[:500], "log": logged}
    engine = model.model.engine
    return {
        "parameters": params,
        "engine": model.model.engine_name,
        "device": str(getattr(engine, "device", "")) or None,
        "providers": getattr(engine, "providers", None),
        "fp16": getattr(engine, "half", None),
        "log": logged,
    }


def instance_threads() -> int:
    """The CPU threads a Triton instance gives its engine: config.pbtxt's `cpu_threads`."""
    return int(config_parameters().get("cpu_threads") or 1)


def serve_configs(device: str, providers: Sequence[str]) -> list[tuple[str, bool, int]]:
    """(engine, cascade, CPU threads) to measure, in this order (torch's thread count is per process and cannot
    go back to its default): torch with its default threads (0) and then with the instance's; ONNX on CUDA with
    the instance's threads when ONNX Runtime has CUDA, else ONNX and int8 ONNX on every core (a CPU reference)."""
    n = instance_threads()
    out = [(e, c, t) for e, t in (("torch", 0), ("torch", n)) for c in (False, True)]
    onnx_gpu = device.startswith("cuda") and "CUDAExecutionProvider" in providers
    out += [("onnx", c, n if onnx_gpu else 0) for c in (False, True)]
    out += [("onnx-int8", c, 0) for c in (False, True)]
    return out


def serve_speed(
    folder: Path, titles: Sequence[str], device: str = "cuda", providers: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Titles through the served code (`Classifier.score_texts`, as an instance's `execute()` calls it) per
    engine x cascade x CPU threads x request rows on `device`: titles/s, call latency, and per call the time in
    the engine (synchronized), the tokenizer and the linear part. `providers`: ONNX Runtime's (`device_info()`)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(folder))
    import classifier

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    texts = list(titles)
    reference = None
    out = []
    for engine, cascade, threads in serve_configs(device, providers):
        try:
            clf = classifier.Classifier(folder, engine=engine, device=device, threads=threads, cascade=cascade)
        except Exception as exc:  # noqa: BLE001 - record why an engine cannot run here, measure the rest
            out.append({"engine": engine, "cascade": cascade, "threads": threads, "error": repr(exc)[:300]})
            continue
        if reference is None:  # torch fp32 on the same device (the torch engine serves fp16 on a GPU)
            half = getattr(clf.engine, "half", False)
            if half:
                clf.engine.net.float()
            reference = clf.score_texts(texts).probs.argmax(1)
            if half:
                clf.engine.net.half()
        pred = clf.score_texts(texts).probs.argmax(1)
        engine_s = [0.0]
        real = clf.engine

        def timed_engine(ids: Any, mask: Any, real: Any = real, engine_s: list[float] = engine_s) -> Any:
            sync()
            t = time.perf_counter()
            o = real(ids, mask)
            sync()
            engine_s[0] += time.perf_counter() - t
            return o

        clf.engine = timed_engine
        for rows in REQUEST_ROWS:
            calls = [texts[i : i + rows] for i in range(0, len(texts), rows)]
            clf.score_texts(calls[0])
            engine_s[0] = 0.0
            lat = []
            t0 = time.perf_counter()
            for chunk in calls:
                t = time.perf_counter()
                clf.score_texts(chunk)
                lat.append(time.perf_counter() - t)
            seconds = time.perf_counter() - t0
            tok = lin = 0.0
            for chunk in calls:
                t = time.perf_counter()
                clf.tokenizer.encode(chunk)
                tok += time.perf_counter() - t
                t = time.perf_counter()
                if clf.linear is not None:
                    clf.linear(chunk)
                lin += time.perf_counter() - t
            rec = {
                "engine": engine,
                "cascade": cascade,
                "threads": threads or "default",
                "providers": getattr(real, "providers", None),
                "request_rows": rows,
                "titles_per_s": round(len(texts) / seconds, 1),
                "call_p50_ms": round(percentile(lat, 50) * 1000, 1),
                "call_p99_ms": round(percentile(lat, 99) * 1000, 1),
                "engine_ms_per_call": round(engine_s[0] / len(calls) * 1000, 1),
                "tokenizer_ms_per_call": round(tok / len(calls) * 1000, 1),
                "linear_ms_per_call": round(lin / len(calls) * 1000, 1),
                "top1_agreement_with_torch_fp32": round(float(np.mean(pred == reference)), 4),
            }
            if cascade:
                rec["cascade_margin"] = clf.cascade_margin
            out.append(rec)
            print(
                f"serve {engine} cascade={cascade} threads={rec['threads']} {rows}: "
                f"{rec['titles_per_s']:,.0f} titles/s (engine {rec['engine_ms_per_call']} ms/call)",
                flush=True,
            )
        del clf, real
    return out


def train(out_dir: Path, threads: int, device: str = "cuda", quick: bool = False) -> dict[str, Any]:
    """The default `listings train` on the device, into a model repository of its own under `out_dir`."""
    from training import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    repo = out_dir / "repo"
    argv = ["--device", device, "--threads", str(threads), "--force", "--output-repo", str(repo)]
    args = parser.parse_args(argv + (["--quick"] if quick else []))
    t0 = time.perf_counter()
    rc = cli.run(args, None)  # type: ignore[arg-type] - run() reads its own settings
    wall = round(time.perf_counter() - t0, 1)
    versions = sorted((repo / "listing_classifier").glob("[0-9]*"), key=lambda p: int(p.name))
    if rc != 0 or not versions:
        return {"rc": rc, "wall_seconds": wall}
    folder = versions[-1]
    m = json.loads((folder / "metrics.json").read_text())
    keep = ("margins_points", "best_epoch", "curve", "train_seconds", "baseline_seconds", "linear_part_seconds")
    return {
        "rc": rc,
        "wall_seconds": wall,
        "folder": str(folder),
        **{k: m.get(k) for k in (*keep, "total_seconds")},
        "model": m.get("model"),
        "baseline": m.get("baseline"),
    }


def save(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": device_info()}
    save(out, results)
    parts = args.parts.split(",")
    if "encoder" in parts:
        from training import artifact

        results["encoder"] = guarded(lambda: encoder_speed(artifact.encoder_dir(), args.device))
        save(out, results)
    folder = Path(args.version) if args.version else None
    if "train" in parts:
        results["train"] = guarded(lambda: train(Path(args.work), args.threads, args.device, args.quick))
        save(out, results)
        trained = results["train"].get("folder") if isinstance(results["train"], dict) else None
        folder = Path(trained) if trained else folder
    if "serve" in parts and folder is not None:
        titles = titles_from(Path(args.data_dir), args.titles_n)
        results["serve_titles"] = len(titles)
        results["gpu_instance"] = guarded(lambda: gpu_instance_choice(folder))
        save(out, results)
        results["serve"] = guarded(
            lambda: serve_speed(folder, titles, args.device, results["device"].get("onnxruntime_providers") or [])
        )
        save(out, results)
    print(f"wrote {out}")
    return 0


def guarded(fn: Callable[[], Any]) -> Any:
    """The part's figures, or what stopped it (the other parts still run)."""
    import traceback

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        return {"error": repr(exc)[:1000]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.gpu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure on this machine's GPU")
    r.add_argument("--out", required=True, help="the JSON to write (rewritten after each part)")
    r.add_argument("--parts", default="encoder,train,serve")
    r.add_argument("--work", default="/tmp/gpu-check", help="where training exports its model version")
    r.add_argument("--version", help="a version folder to serve when training is not among the parts")
    r.add_argument(
        "--data-dir", required=True, help="the example catalogue (LISTINGS_DATA_DIR): its titles are what serve sends"
    )
    r.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a dry run of the script here)")
    r.add_argument("--quick", action="store_true", help="train --quick (a dry run)")
    r.add_argument("--titles-n", type=int, default=SERVE_TITLES, help="titles the serving part sends")
    r.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch CPU threads for training")
    p = sub.add_parser("plot", help="draw the PNG of a results JSON")
    p.add_argument("json", type=Path)
    p.add_argument("--png", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "plot":
        return plot(args.json, args.png or args.json.with_suffix(".png"))
    return run_all(args)


def finish_panel(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)


def plot(path: Path, png: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = json.loads(path.read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    enc = r.get("encoder") if isinstance(r.get("encoder"), list) else []
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        for tokens, style in zip(ENCODER_TOKENS, ("-", "--"), strict=True):
            pts = [e for e in enc if e["precision"] == precision and e["tokens"] == tokens]
            if pts:
                a.plot(
                    [e["rows"] for e in pts],
                    [e["rows_per_s"] for e in pts],
                    style,
                    marker="o",
                    label=f"{precision}, {tokens} tokens",
                )
    finish_panel(a, "rows per call", "rows / s", "encoder + heads forward on the GPU")
    serve = [x for x in (r.get("serve") if isinstance(r.get("serve"), list) else []) if "error" not in x]
    combos = list(dict.fromkeys((x["engine"], x["cascade"], x.get("threads", "default")) for x in serve))
    for engine, cascade, threads in combos:
        pts = [
            x for x in serve if (x["engine"], x["cascade"], x.get("threads", "default")) == (engine, cascade, threads)
        ]
        on_gpu = engine == "torch" or "CUDAExecutionProvider" in (pts[0].get("providers") or [])
        b.plot(
            [x["request_rows"] for x in pts],
            [x["titles_per_s"] for x in pts],
            "--" if cascade else "-",
            marker="o",
            label=f"{engine} ({'GPU' if on_gpu else 'CPU'}, threads {threads}){' + cascade' if cascade else ''}",
        )
    finish_panel(b, "titles per request", "titles / s", "served code (classifier.py) per engine")
    dev = r.get("device", {})
    fig.suptitle(f"GPU check {r.get('when', '')}: {dev.get('gpu', 'no GPU')}, torch {dev.get('torch')}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
