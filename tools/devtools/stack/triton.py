"""Triton Inference Server: the `tritonserver` binary shipped inside the nvidia-pytriton wheel."""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from devtools.config import StackSettings
from devtools.stack.process import Managed, StackError, children, ensure_ports_free, wait_until
from devtools.stack.supervise import RESTARTED
from stream.config import Settings
from training import background, export
from training.config import MODEL_NAME

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SHELL_SPECIAL = frozenset("\"'\\$`;&|<>()")  # with whitespace: what breaks an unquoted path in `bash -c`


def part(settings: StackSettings) -> Managed:
    return Managed.of("triton", settings.state_dir, settings.log_dir, marker="tritonserver")


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - set-up problem
        raise StackError("triton: the nvidia-pytriton wheel is not installed in this environment") from exc
    return Path(pytriton.__file__).resolve().parent


def backend_dir(settings: StackSettings) -> Path:
    """A backend folder holding the python backend and the stub built for this Python."""
    src = _pytriton_dir() / "tritonserver"
    dest = settings.state_dir / "triton-backends" / "python"
    stub = src / "python_backend_stubs" / PY / "triton_python_backend_stub"
    if not stub.exists():
        raise StackError(f"triton: the wheel has no python backend stub for Python {PY}")
    dest.mkdir(parents=True, exist_ok=True)
    for f in (src / "backends" / "python").iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    shutil.copy2(stub, dest / "triton_python_backend_stub")
    return dest.parent


def servable_models(repo: Path) -> list[str]:
    """Models of the repository that have a config and at least one numbered version."""
    names = []
    for model in sorted(p for p in repo.iterdir() if p.is_dir()):
        if (model / "config.pbtxt").exists() and any(v.is_dir() and v.name.isdigit() for v in model.iterdir()):
            names.append(model.name)
    return names


def server_env() -> dict[str, str]:
    base = _pytriton_dir()
    libs = base.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    # the stub links `libpython3.11.so.1.0`; make it load the libpython of the interpreter whose stdlib and
    # extension modules it imports (a different 3.11 build lacks symbols they need, e.g. `_ssl`)
    pylib = sysconfig.get_config_var("LIBDIR") or ""
    own_libpython = pylib if pylib and (Path(pylib) / f"libpython{PY}.so.1.0").exists() else ""
    env["LD_LIBRARY_PATH"] = ":".join(
        p
        for p in [
            own_libpython,
            str(libs),
            str(base / "tritonserver" / "external_libs"),
            env.get("LD_LIBRARY_PATH", ""),
        ]
        if p
    )
    # the python backend stub runs model.py with the first `python3` on PATH: ours, with numpy<2
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def check_paths(settings: StackSettings) -> None:
    """Refuse folders whose path holds whitespace or a character the shell treats specially: the python backend
    launches its stub through `bash -c` with the paths unquoted, so every model on it would fail to load."""
    folders = {"LISTINGS_STATE_DIR": settings.state_dir, "LISTINGS_MODEL_REPOSITORY": settings.model_repository}
    for variable, folder in folders.items():
        path = str(Path(folder).resolve())
        if any(c.isspace() or c in SHELL_SPECIAL for c in path):
            raise StackError(
                f"triton: {variable} {path!r} contains whitespace or a shell character, which Triton's python "
                "backend cannot start models from; use a folder whose path has none"
            )


def ready(settings: StackSettings) -> bool:
    with urllib.request.urlopen(f"http://{settings.triton_http}/v2/health/ready", timeout=2) as r:
        return r.status == 200


def up(settings: StackSettings) -> str:
    p = part(settings)
    if p.running():
        return f"triton already running (pid {p.pid()}) on grpc {settings.triton_grpc}, http {settings.triton_http}"
    check_paths(settings)
    ensure_ports_free(
        "triton",
        {
            "triton_http_port": settings.triton_http_port,
            "triton_grpc_port": settings.triton_grpc_port,
            "triton_metrics_port": settings.triton_metrics_port,
        },
    )
    binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    repo = settings.model_repository
    refreshed = export.refresh_glue(repo, MODEL_NAME)  # versions exported before the glue changed
    background.mirror(repo, MODEL_NAME)  # the backfill's copy of the classifier: its versions and config
    models = servable_models(repo)
    server = [
        str(binary),
        f"--model-repository={repo}",
        f"--backend-directory={backend_dir(settings)}",
        "--http-address=127.0.0.1",
        f"--http-port={settings.triton_http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={settings.triton_grpc_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-metrics=true",
        "--model-control-mode=explicit",
        "--exit-on-error=true",
        "--log-verbose=0",
        *[f"--load-model={m}" for m in models],
    ]
    # under a supervisor that starts it again if it crashes (see devtools.stack.supervise); the pid file holds the
    # supervisor's pid, whose command line carries the server's, so stop/kill/status work on the pair
    argv = [sys.executable, "-m", "devtools.stack.supervise", "--name", "triton", "--", *server]
    p.start(argv, env=server_env())
    wait_until(p, lambda: ready(settings), settings.startup_timeout)
    glue = f" (model.py refreshed in versions {', '.join(map(str, refreshed))})" if refreshed else ""
    return (
        f"triton started (pid {p.pid()}) serving {', '.join(models) or 'no models'} on grpc {settings.triton_grpc}"
        + glue
    )


def reload(settings: StackSettings, runtime: Settings) -> str:
    """Load what the model repository holds now into the running Triton (explicit model control picks nothing up
    by itself): after `listings train` exported a version, before `listings shadow` or `promote` can use it. Triton
    swaps the versions without a gap in serving; the version policy (the two newest) decides which stay. `runtime`:
    the client settings, pointed at this stack's Triton to say which versions it serves."""
    from tritonclient.utils import InferenceServerException

    from stream.models import served_versions

    if not part(settings).running():
        raise StackError("triton is not running: `listings stack up` starts it with the repository's versions")
    repo = settings.model_repository
    refreshed = export.refresh_glue(repo, MODEL_NAME)
    load_model(settings, MODEL_NAME, with_background=True)
    glue = f" (model.py refreshed in versions {', '.join(map(str, refreshed))})" if refreshed else ""
    try:
        served = served_versions(runtime.replace(triton={"url": settings.triton_grpc, "model_name": MODEL_NAME}))
    except InferenceServerException as exc:
        raise StackError(f"triton: its repository index at {settings.triton_grpc} did not answer ({exc})") from None
    versions = [v for v, state in served.items() if state == "READY"]
    return f"triton reloaded {MODEL_NAME}: versions {', '.join(versions) or 'none'} ready{glue}"


def server_pid(settings: StackSettings) -> int | None:
    """The `tritonserver` process itself: the child of the supervisor whose pid the pid file holds."""
    parent = part(settings).pid()
    if parent is None:
        return None
    for pid in children(parent):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].endswith(b"tritonserver"):
                return pid
        except OSError:
            continue  # gone meanwhile
    return None


def restarts(settings: StackSettings) -> list[str]:
    """The supervisor's restart lines in Triton's log: one per crash it recovered from."""
    try:
        return [line for line in part(settings).log_file.read_text(errors="replace").splitlines() if RESTARTED in line]
    except FileNotFoundError:
        return []


def load_model(settings: StackSettings, name: str, with_background: bool = False) -> None:
    """Ask a running Triton (explicit model control) to load or reload `name` from the repository; with
    `with_background`, also its background copy, first brought up to date with the versions and config `name` now
    has (after a new version: the backfill's copy must serve it too). An engine swap for a measurement reloads
    the live model alone."""
    _load(settings, name)
    if with_background and background.mirror(settings.model_repository, name) is not None:
        _load(settings, background.name_of(name))
    # a version the reload dropped is unloaded after the call returns, and Triton's strict readiness says "not
    # ready" until it is gone: return once the server is ready again
    wait_until(part(settings), lambda: ready(settings), settings.startup_timeout)


def _load(settings: StackSettings, name: str) -> None:
    """Load `name`; a refusal is a StackError carrying Triton's reason (the body of its HTTP 400)."""
    req = urllib.request.Request(f"http://{settings.triton_http}/v2/repository/models/{name}/load", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            if r.status != 200:
                raise StackError(f"triton: loading {name} answered HTTP {r.status}")
    except urllib.error.HTTPError as exc:
        raise StackError(f"triton: loading {name} failed (HTTP {exc.code}): {_reason(exc)}") from None
    except urllib.error.URLError as exc:
        raise StackError(
            f"triton: loading {name}: Triton at {settings.triton_http} not reachable ({exc.reason})"
        ) from None


def _reason(exc: urllib.error.HTTPError) -> str:
    """Triton's error message from its JSON answer (`{"error": "..."}`), else the body as it is."""
    body = exc.read().decode(errors="replace").strip()
    try:
        doc = json.loads(body)
    except ValueError:
        return body or str(exc.reason)
    return str(doc.get("error") or body) if isinstance(doc, dict) else body
