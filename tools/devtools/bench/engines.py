"""(a) per engine: the same titles through Triton with each serving engine of the version (torch fp32, ONNX fp32,
ONNX int8) with every row through the encoder (`cascade: off`), and torch fp32 with the version's cascade, switched
by the model config's `engine` / `cascade` parameters and a reload, in one run; the Triton process memory (server
+ python-backend stubs, RSS) with that engine loaded; and a concurrency x batch-size sweep of the default
(`auto`, cascade on) configuration (throughput against p99 request latency).

The sweep is our own async gRPC load generator: the PyPI `perf-analyzer` package is a placeholder without the
binary, and Triton's perf_analyzer is not in the nvidia-pytriton wheel."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.config import StackSettings
from devtools.stats import percentile
from stream.classify.triton_client import text_inputs
from stream.config import Settings
from stream.retry import poll

# label -> (engine, cascade): the engines alone, then the cascade's own share on the reference engine
CONFIGS = {
    "torch": ("torch", "off"),
    "onnx": ("onnx", "off"),
    "onnx-int8": ("onnx-int8", "off"),
    "torch+cascade": ("torch", "on"),
}
SWEEP_CONCURRENCY = (1, 2, 4, 8)
SWEEP_BATCH = (1, 8, 32, 64)


def triton_rss_mib(stack: StackSettings) -> float:
    """Resident memory of the Triton server and every process under it (the python-backend stubs); the
    supervisor the stack runs it under is left out."""
    from devtools.stack import triton
    from devtools.stack.process import children

    pid = triton.part(stack).pid()
    if pid is None:
        return 0.0
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children(p)
        try:
            program = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0", 1)[0]
            if not program.endswith((b"tritonserver", b"triton_python_backend_stub")):
                continue
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            continue
    return round(total / 1024, 1)


def wait_model(settings: Settings, timeout_s: float) -> None:
    """Until Triton reports the model ready (errors while it loads count as not yet)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(settings.triton.url)
    try:
        poll(
            lambda: client.is_model_ready(settings.triton.model_name),
            timeout_s,
            f"model {settings.triton.model_name} ready on {settings.triton.url}",
            interval=1.0,
            tolerate=(InferenceServerException,),
        )
    finally:
        client.close()


def set_parameter(config_text: str, key: str, value: str) -> str:
    """`config.pbtxt` text with the string parameter `key` set to `value`."""
    return re.sub(rf'(key: "{key}", value: \{{ string_value: ")[^"]*(")', rf"\g<1>{value}\g<2>", config_text)


def reload_model(stack: StackSettings, s: Settings) -> None:
    """Make Triton reload the model from its (rewritten) config and wait until it is ready."""
    from devtools.stack import triton

    triton.load_model(stack, s.triton.model_name)
    wait_model(s, 300)


def use_engine(stack: StackSettings, s: Settings, engine: str, cascade: str = "on") -> None:
    """Serve the model with `engine` and `cascade` (config parameters), reloading it and waiting until it is ready."""
    config = stack.model_repository / s.triton.model_name / "config.pbtxt"
    config.write_text(set_parameter(set_parameter(config.read_text(), "engine", engine), "cascade", cascade))
    reload_model(stack, s)


async def closed_loop(
    s: Settings, titles: Sequence[str], batch: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Closed-loop load: `concurrency` clients each sending `batch` titles back to back for `seconds`."""
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(s.triton.url)
    latencies: list[float] = []
    done = 0
    start = time.perf_counter()
    stop = start + seconds
    last = start  # when the last request finished: requests in flight at `stop` finish after it

    async def one(k: int) -> None:
        nonlocal done, last
        i = k * batch
        while time.perf_counter() < stop:
            chunk = [titles[(i + j) % len(titles)] for j in range(batch)]
            i += batch * concurrency
            t = time.perf_counter()
            await client.infer(
                s.triton.model_name,
                text_inputs(grpcclient, TITLE=chunk),
                outputs=[grpcclient.InferRequestedOutput("RESULT")],
                client_timeout=120,
            )
            last = time.perf_counter()
            latencies.append(last - t)
            done += batch

    try:
        await asyncio.gather(*(one(k) for k in range(concurrency)))  # warm-up round included, then measured
    finally:
        await client.close()
    return {
        "batch": batch,
        "concurrency": concurrency,
        "titles_per_s": round(done / (last - start), 1) if last > start else 0.0,  # over the time it took
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "requests": len(latencies),
    }


def sweep(s: Settings, titles: Sequence[str], seconds: float = 4.0, progress: bool = True) -> list[dict[str, Any]]:
    from tqdm import tqdm

    points = [(c, b) for c in SWEEP_CONCURRENCY for b in SWEEP_BATCH]
    out = []
    for c, b in tqdm(points, desc="(a) sweep", disable=not progress, unit="point"):
        asyncio.run(closed_loop(s, titles, b, c, 1.0))  # settle
        out.append(asyncio.run(closed_loop(s, titles, b, c, seconds)))
    return out


def compare(stack: StackSettings, s: Settings, titles: Sequence[str], raw: Any, progress: bool) -> dict[str, Any]:
    """(a) for every configuration of `CONFIGS` in one run, then back to the version's default (`auto`, cascade
    on)."""
    out: dict[str, Any] = {}
    try:
        for label, (engine, cascade) in CONFIGS.items():
            use_engine(stack, s, engine, cascade)
            run = raw(s, titles, progress)
            run["triton_rss_mib"] = triton_rss_mib(stack)
            run["engine"], run["cascade"] = engine, cascade
            out[label] = run
    finally:
        use_engine(stack, s, "auto", "on")
    torch = out["torch"]["titles_per_s"]
    for run in out.values():
        run["vs_torch_fp32"] = round(run["titles_per_s"] / torch, 2) if torch else 0.0
    return out
