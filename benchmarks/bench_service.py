"""Benchmark: the inference service under load on loopback, against ``mlflow models serve`` of the same model.

One run does everything on 127.0.0.1:

1. models: unless ``--tracking-uri`` names a store with champions, a tiny cohort is synthesized and ingested
   and small diagnosis and fraud models are trained and registered as champions in a temporary MLflow store;
2. servers: the Shipa service (``python -m pipelines.cli serve --workers N``, 1 thread each) and
   ``mlflow models serve -m models:/shipa-fraud@champion --env-manager local -w N`` (the venv's bin on PATH),
   both with ``--workers`` processes (default 1);
3. fraud load: a load generator in a separate process (asyncio, one keep-alive HTTP/1.1 connection per client)
   sends single claims for ``--duration`` seconds at each concurrency (1, 16, 64) to both: Shipa gets a FHIR
   Claim (it validates, de-identifies, builds the claim's features against the Fund's history, the ingest tables
   of ``--history``, and scores with the pyfunc), MLflow gets the same claim's feature record, built against the
   same history (``dataframe_split``: scoring only). Requests/s, p50 and p99 latency, errors and
   the ratio Shipa/MLflow; the server's RSS after a warm-up and after each level;
4. diagnosis: ``--diagnosis-requests`` sequential DICOM uploads with the patient's Bundle (de-identification,
   preprocessing, the pyfunc and Grad-CAM), latency per image.

Every request must succeed (exit code 1 otherwise). The default run takes about 2-3 minutes::

    python benchmarks/bench_service.py
    python benchmarks/bench_service.py --duration 3 --concurrency 1,16 --diagnosis-requests 5  # quick
    python benchmarks/bench_service.py --tracking-uri sqlite:///$PWD/mlflow.db --raw data/raw  # real models
    python benchmarks/bench_service.py --tracking-uri sqlite:///$PWD/mlflow.db --raw data/raw --workers 2
    # (the history defaults to the ingest tables beside the raw data: data/interim/tables)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAUD_NON_INPUTS = ("claim_id", "provider_id", "patient_id", "created", "label", "split")
BENCH_PEPPER = "bench-service-pepper-0123456789"
BENCH_KEY = "shipa-demo-key-not-for-real-data"  # the built-in cohort's demo key (demo mode)


# --- load generator (runs in its own process) ---------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads whole responses.

    A hand-written client rather than httpx: httpx spent about 1 ms of CPU a request, a third of a core at 300
    requests/s, on the same two cores as the servers it measured; this costs about 0.05 ms (against a bare FastAPI
    endpoint: 5,600 requests/s, httpx 1,400).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        """Send one request; return the response status once its whole body has arrived."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")  # the empty trailer
        else:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def prepare_requests(url: str, payloads: list[dict[str, Any]], headers: dict[str, str]) -> list[bytes]:
    """The raw HTTP/1.1 POST of each payload (its body and headers plus the common ``headers``)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    out = []
    for payload in payloads:
        body = payload["content"].encode("utf-8")
        fields = {"Host": parts.netloc, "Content-Length": str(len(body)), **headers, **payload["headers"]}
        head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        out.append(head.encode("latin-1") + body)
    return out


async def _generate(
    url: str, payloads: list[dict[str, Any]], headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    """``concurrency`` clients, each on its own keep-alive connection, send requests back to back for ``duration``
    seconds; any status but 200, or a failed connection, is an error."""
    parts = urlsplit(url)
    requests = prepare_requests(url, payloads, headers)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        nonlocal errors
        connection = _Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        i = offset
        try:
            while time.perf_counter() < deadline:
                raw = requests[i % len(requests)]
                i += concurrency
                start = time.perf_counter()
                try:
                    ok = await connection.request(raw) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    connection.close()
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(1000 * statistics.median(ordered), 2) if ordered else None,
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2) if ordered else None,
    }


def generator_main(spec_path: Path) -> None:
    """Entry of the load-generator process: read a spec, run, print one JSON line."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    result = asyncio.run(
        _generate(spec["url"], spec["payloads"], spec["headers"], int(spec["concurrency"]), float(spec["duration"]))
    )
    print(json.dumps(result))


def run_load(
    url: str,
    payloads: list[dict[str, Any]],
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    tmp: Path,
) -> dict[str, Any]:
    """Run the load generator in a separate process and return its result."""
    spec = tmp / f"load-{concurrency}-{abs(hash(url))}.json"
    spec.write_text(
        json.dumps(
            {
                "url": url,
                "payloads": payloads,
                "headers": headers,
                "concurrency": concurrency,
                "duration": duration,
            }
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--generator", str(spec)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- set-up -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_models(work: Path) -> tuple[str, Path]:
    """A tiny cohort and small diagnosis and fraud models as champions; returns (tracking URI, raw dir)."""
    import polars as pl

    from pipelines.config import (
        DiagnosisFeaturesParams,
        DiagnosisTrainParams,
        EvaluateParams,
        FraudFeaturesParams,
        FraudTrainParams,
        IngestParams,
        SynthesizeParams,
    )
    from pipelines.features.diagnosis import Scaler
    from pipelines.stages import ingest, synthesize
    from pipelines.stages.evaluate import diagnosis as evaluate_dx
    from pipelines.stages.features import diagnosis as features_dx
    from pipelines.stages.features import fraud as features_fr
    from pipelines.stages.train import diagnosis as train_dx
    from pipelines.stages.train import fraud as train_fr
    from pipelines.tracking import pyfunc_diagnosis as dxw
    from pipelines.tracking import pyfunc_fraud as frw
    from pipelines.tracking.registry import (
        FRAUD_MODEL_NAME,
        diagnosis_model_name,
        register_version,
        set_alias,
    )
    from pipelines.tracking.runs import stage_run

    raw, interim = work / "data" / "raw", work / "data" / "interim"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    cwd = Path.cwd()
    os.chdir(work)
    try:
        synthesize.run(
            SynthesizeParams(n_patients=240, image_size=64, imaging_rate=0.7, n_organizations=6, seed=7),
            raw,
            progress=False,
        )
        ingest.run(IngestParams(workers=1, image_size=64), raw, interim, key=None, progress=False)
        dx, fr = work / "diagnosis", work / "fraud"
        features_dx.run(DiagnosisFeaturesParams(), interim, dx / "processed")
        train_dx.run(
            DiagnosisTrainParams(image_size=64, epochs=2, batch_size=16, modes=("fused",), num_threads=1),
            dx / "processed",
            dx / "train",
            progress=False,
        )
        evaluate_dx.run(
            EvaluateParams(n_boot=20, min_group_size=5),
            dx / "processed",
            dx / "train",
            dx / "eval",
            dx / "metrics.json",
        )
        features_fr.run(FraudFeaturesParams(), interim, fr / "processed")
        train_fr.run(FraudTrainParams(epochs=2), fr / "processed", fr / "train")
        feats = json.loads((dx / "train" / "features.json").read_text())
        scaler = Scaler.from_dict(feats["scaler"])
        with stage_run(
            "register@diagnosis",
            tracking_uri=uri,
            experiment="shipa",
            params={},
            tags={},
            pipeline_run_id=None,
        ) as run:
            arts = dxw.artifact_files(
                dx / "train" / "fused",
                dx / "train" / "features.json",
                dx / "eval" / "calibration.json",
                work / "scratch",
            )
            ref = run.log_pyfunc_model(
                dxw.DiagnosisPyfunc(), artifacts=arts, input_example=dxw.input_example(scaler),
                signature=dxw.signature(scaler.features), pip_requirements=[],
                metadata={"ingest_image_size": 64},
            )  # fmt: skip
        name = diagnosis_model_name(feats["task"])
        set_alias(
            name,
            "champion",
            register_version(ref.model_uri, name, tracking_uri=uri, run_id=ref.run_id, model_id=ref.model_id),
            tracking_uri=uri,
        )
        model_dir = fr / "train" / "model"
        scorer = frw.load_scorer(model_dir)
        schema = {
            k: v
            for k, v in pl.read_parquet_schema(fr / "processed" / "dataset.parquet").items()
            if k not in FRAUD_NON_INPUTS
        }
        with stage_run(
            "register@fraud", tracking_uri=uri, experiment="shipa", params={}, tags={}, pipeline_run_id=None
        ) as run:
            ref = run.log_pyfunc_model(
                frw.FraudPyfunc(), artifacts={"model": model_dir},
                input_example=frw.input_example(scorer, schema),
                signature=frw.signature(schema, scorer.feature_names), pip_requirements=[],
            )  # fmt: skip
        version = register_version(
            ref.model_uri, FRAUD_MODEL_NAME, tracking_uri=uri, run_id=ref.run_id, model_id=ref.model_id
        )
        set_alias(FRAUD_MODEL_NAME, "champion", version, tracking_uri=uri)
    finally:
        os.chdir(cwd)
    return uri, raw


@functools.cache
def _ndjson(raw: Path, rtype: str) -> list[dict[str, Any]]:
    """Resources of one type, read once per type (the broken lines skipped, the defective records kept as before)."""
    from pipelines.synth.writers import read_resources

    return read_resources(raw, rtype, without_defects=False)


def payloads(
    raw: Path, key: str, n: int, history_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None, int]:
    """(Shipa payloads: single FHIR Claims; MLflow payloads: their feature records against the history; a
    diagnosis case; the claims in the history)."""
    from pipelines.features.fraud import FraudFeatureOptions
    from pipelines.features.fraud_engine import FraudHistory
    from pipelines.fhir.pseudonym import Pseudonymizer
    from pipelines.service.fraud_case import build_claim_records

    claims = _ndjson(raw, "Claim")[:n]
    pseudonymizer = Pseudonymizer(key)
    history = FraudHistory.load(history_dir, FraudFeatureOptions())
    shipa, mlflow_bodies = [], []
    for claim in claims:
        content = json.dumps(claim).encode()
        shipa.append({"content": content.decode(), "headers": {"Content-Type": "application/fhir+json"}})
        records = build_claim_records(claim, pseudonymizer=pseudonymizer, history=history, max_claims=1).records
        records = records.drop([c for c in FRAUD_NON_INPUTS if c in records.columns])
        rows = [[v.isoformat() if hasattr(v, "isoformat") else v for v in row] for row in records.rows()]
        body = {"dataframe_split": {"columns": records.columns, "data": rows}}
        mlflow_bodies.append({"content": json.dumps(body), "headers": {"Content-Type": "application/json"}})
    studies = _ndjson(raw, "ImagingStudy")
    case = None
    for study in studies:
        uid = study["identifier"][0]["value"].removeprefix("urn:oid:")
        files = sorted((raw / "dicom" / uid).glob("*.dcm"))
        if not files:
            continue
        ref = study["subject"]["reference"]
        patient = [p for p in _ndjson(raw, "Patient") if f"Patient/{p['id']}" == ref]
        observations = [o for o in _ndjson(raw, "Observation") if (o.get("subject") or {}).get("reference") == ref]
        entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in [*patient, study, *observations]]
        case = {
            "dicom": files[0],
            "bundle": {"resourceType": "Bundle", "type": "collection", "entry": entries},
        }
        break
    return shipa, mlflow_bodies, case, len(history)


def wait_for(url: str, headers: dict[str, str], timeout: float, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({url})")
        try:
            if httpx.get(url, headers=headers, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def start_shipa(uri: str, work: Path, port: int, history: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The Shipa service in a subprocess (demo mode, ``workers`` processes of one thread, scoring against the ingest
    tables in ``history``); returns (process, token)."""
    from pipelines.predictionlog.db import make_engine
    from pipelines.service.settings import load_service_settings
    from pipelines.service.tokens import TokenStore

    state = work / "service-state"
    state.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "SHIPA_SERVICE_DEMO_MODE": "true",
        "SHIPA_SERVICE_TOKEN_PEPPER": BENCH_PEPPER,
        "SHIPA_SERVICE_STATE_DIR": str(state),
        "SHIPA_SERVICE_TRACKING_URI": uri,
        "SHIPA_SERVICE_PORT": str(port),
        "SHIPA_SERVICE_RATE_PER_S": "1000000",
        "SHIPA_SERVICE_BURST": "1000000",
        "SHIPA_SERVICE_MAX_CONCURRENT_PER_TOKEN": "1000000",  # every load client shares one token
        "SHIPA_SERVICE_THREADS": "1",
        "SHIPA_SERVICE_LOG_LEVEL": "WARNING",
        "SHIPA_PSEUDONYM_KEY": BENCH_KEY,
        "SHIPA_SERVICE_FRAUD_HISTORY": str(history.resolve()),
    }
    settings = load_service_settings(
        demo_mode=True,
        token_pepper=BENCH_PEPPER,
        state_dir=state,
        database_url=f"sqlite:///{state / 'service.db'}",
    )
    token = TokenStore(make_engine(settings.database_url), settings.pepper()).add(f"bench-{port}", "admin")
    log = (work / "shipa-service.log").open("wb")
    # cwd without params.yaml: the registered model's metadata gives the ingest image size.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--workers", str(workers)],
        cwd=work, env={**env, "PYTHONPATH": str(REPO)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return proc, token


def start_mlflow(uri: str, work: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """``mlflow models serve`` of the fraud champion (local env manager, ``workers`` workers)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    cmd = [
        str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", "models:/shipa-fraud@champion",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
    ]  # fmt: skip
    log = (work / "mlflow-serve.log").open("wb")
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _tree(pid: int) -> list[Any]:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, the workers (MB)."""
    return round(sum(p.memory_info().rss for p in _tree(pid)) / 2**20, 1)


def wait_until_idle(pid: int, timeout: float) -> None:
    """Wait until a server's processes stop using the CPU: /ready answers once one worker is up, the others may
    still be loading their models."""
    deadline = time.monotonic() + timeout

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in _tree(pid))

    before = cpu()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu()
        if now - before < 0.05:
            return
        before = now
    raise RuntimeError(f"the server's workers were still busy after {timeout:.0f} s")


def diagnosis_latency(base: str, token: str, case: dict[str, Any], n: int) -> dict[str, Any]:
    import httpx

    files = {
        "file": ("study.dcm", Path(case["dicom"]).read_bytes(), "application/dicom"),
        "bundle": ("bundle.json", json.dumps(case["bundle"]).encode(), "application/fhir+json"),
    }
    times, errors = [], 0
    with httpx.Client(base_url=base, timeout=120) as client:
        for i in range(n + 1):
            start = time.perf_counter()
            response = client.post("/diagnosis/pneumonia", files=files, headers={"Authorization": f"Bearer {token}"})
            if i:  # the first request warms the model up
                times.append(time.perf_counter() - start)
                errors += response.status_code != 200
    ordered = sorted(times)
    return {
        "requests": len(times),
        "errors": errors,
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else None,
    }


def main() -> int:
    """Set up, serve, load both servers and print the comparison; 1 when any request failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per level and server")
    parser.add_argument("--claims", type=int, default=50, help="distinct single-claim payloads")
    parser.add_argument("--diagnosis-requests", type=int, default=20, help="sequential DICOM requests (0: none)")
    parser.add_argument("--tracking-uri", help="an MLflow store with shipa-fraud (and diagnosis) champions")
    parser.add_argument("--raw", type=Path, help="the raw data the payloads come from (with --tracking-uri)")
    parser.add_argument("--key", default=BENCH_KEY, help="the pseudonymisation key the models' data used")
    parser.add_argument(
        "--history", type=Path, help="the ingest tables claims are scored against (default: RAW/../interim/tables)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes of each server (default 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--generator", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generator:
        generator_main(args.generator)
        return 0
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    procs: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    try:
        if args.tracking_uri:
            if args.raw is None:
                parser.error("--tracking-uri needs --raw")
            uri, raw = args.tracking_uri, args.raw
        else:
            uri, raw = build_models(work)
        setup_s = time.perf_counter() - started
        history = args.history or raw.parent / "interim" / "tables"
        shipa_bodies, mlflow_bodies, case, history_claims = payloads(raw, args.key, args.claims, history)
        shipa_port, mlflow_port = free_port(), free_port()
        shipa, token = start_shipa(uri, work, shipa_port, history, args.workers)
        procs.append(shipa)
        ml = start_mlflow(uri, work, mlflow_port, args.workers)
        procs.append(ml)
        auth = {"Authorization": f"Bearer {token}"}
        shipa_base, mlflow_base = f"http://127.0.0.1:{shipa_port}", f"http://127.0.0.1:{mlflow_port}"
        wait_for(f"{shipa_base}/ready", auth, 180, shipa)
        wait_for(f"{mlflow_base}/ping", {}, 180, ml)
        for proc in procs:
            wait_until_idle(proc.pid, 180)
        rows = []
        fraud_url = f"{shipa_base}/fraud/score?format=json"
        run_load(fraud_url, shipa_bodies, auth, 4, min(2.0, args.duration), work)  # warm-up, not reported
        memory = {"after_warmup_mb": rss_mb(shipa.pid), "after_level_mb": []}
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            s = run_load(fraud_url, shipa_bodies, auth, concurrency, args.duration, work)
            memory["after_level_mb"].append(rss_mb(shipa.pid))
            m = run_load(f"{mlflow_base}/invocations", mlflow_bodies, {}, concurrency, args.duration, work)
            ratio = round(s["rps"] / m["rps"], 2) if m["rps"] else None
            rows.append({"concurrency": concurrency, "shipa": s, "mlflow": m, "rps_ratio_shipa_over_mlflow": ratio})
            print(json.dumps(rows[-1]), flush=True)
        diagnosis = (
            diagnosis_latency(shipa_base, token, case, args.diagnosis_requests)
            if case is not None and args.diagnosis_requests
            else None
        )
    finally:
        for proc in procs:
            stop(proc)
    result = {
        "workers": args.workers,
        "history_claims": history_claims,
        "setup_s": round(setup_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "fraud": rows,
        "shipa_requests": sum(r["shipa"]["requests"] for r in rows),
        "shipa_memory": memory,
        "diagnosis": diagnosis,
    }
    print("clients | shipa rps | p50 ms | p99 ms | mlflow rps | p50 ms | p99 ms | ratio | errors")
    for row in rows:
        s, m = row["shipa"], row["mlflow"]
        print(
            f"{row['concurrency']:>7} | {s['rps']:>9} | {s['p50_ms']:>6} | {s['p99_ms']:>6} | {m['rps']:>10} | "
            f"{m['p50_ms']:>6} | {m['p99_ms']:>6} | {row['rps_ratio_shipa_over_mlflow']:>5} | "
            f"{s['errors'] + m['errors']}"
        )
    print(
        f"Shipa: {result['shipa_requests']} fraud requests, "
        f"{sum(r['shipa']['errors'] for r in rows)} errors; server RSS {memory['after_warmup_mb']} MB after warm-up, "
        f"{' / '.join(str(m) for m in memory['after_level_mb'])} MB after each level"
    )
    if diagnosis:
        print(
            f"diagnosis per image: p50 {diagnosis['p50_ms']} ms, p99 {diagnosis['p99_ms']} ms "
            f"({diagnosis['requests']} requests)"
        )
    print(
        f"{args.workers} worker(s) per server; history: {history_claims} claims; "
        f"set-up {result['setup_s']} s, total {result['total_s']} s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    errors = sum(r["shipa"]["errors"] + r["mlflow"]["errors"] for r in rows) + (diagnosis or {}).get("errors", 0)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
