"""Files API benchmark (not a test): upload throughput + server RSS growth, list/retrieve latency.

Starts a real `tuneforge serve` per database (SQLite, then PostgreSQL on a fresh schema) and per
blob backend (`--blob local|s3|both`: the local directory, and/or an S3 API server, a real `moto`
process started here on 127.0.0.1), uploads one large file while sampling the server's peak RSS,
downloads it back, then measures p50/p99 latency of files.list and files.retrieve with 16
concurrent clients on loopback. Prints a Markdown section for RESULTS.md; with `--blob both` also
the S3/local ratio of upload throughput.

    make bench-files            # or: .venv/bin/python benchmarks/bench_files.py --mb 200 --blob both
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))
PG = os.environ.get("TUNEFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MB = 1024 * 1024


def start(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, dict[str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data_dir), "TUNEFORGE_LOG_LEVEL": "warning", **env}
    proc = subprocess.Popen(
        [TUNEFORGE, "serve", "--port", str(port), "--workers", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url, env
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def start_s3() -> tuple[subprocess.Popen, dict[str, str]]:
    """A moto S3 server on a free port and the AWS_* settings (boto3 reads them) that reach it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for _ in range(600):
        try:
            httpx.get(env["AWS_ENDPOINT_URL"])
            return proc, env
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def download(url: str, key: str, file_id: str, size: int) -> float:
    started = time.perf_counter()
    got = 0
    with httpx.stream(
        "GET", f"{url}/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {key}"}, timeout=600
    ) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes(1 << 20):
            got += len(chunk)
    assert got == size, (got, size)
    return size / MB / (time.perf_counter() - started)


def upload(url: str, key: str, path: Path, pid: int) -> tuple[float, float, str]:
    proc = psutil.Process(pid)
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    started = time.perf_counter()
    with open(path, "rb") as fh:
        r = httpx.post(
            f"{url}/v1/files",
            headers={"Authorization": f"Bearer {key}"},
            data={"purpose": "fine-tune"},
            files={"file": ("big.jsonl", fh)},
            timeout=600,
        )
    elapsed = time.perf_counter() - started
    done.set()
    t.join()
    r.raise_for_status()
    return path.stat().st_size / MB / elapsed, (peak - base) / MB, r.json()["id"]


def latency(url: str, key: str, path: str, clients: int, per_client: int) -> dict[str, float]:
    def worker(_: int) -> list[float]:
        out = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            for _ in range(per_client):
                t0 = time.perf_counter()
                c.get(path).raise_for_status()
                out.append((time.perf_counter() - t0) * 1000)
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        samples = sorted(x for xs in pool.map(worker, range(clients)) for x in xs)
    wall = time.perf_counter() - t0
    return {
        "p50": statistics.median(samples),
        "p99": samples[int(len(samples) * 0.99) - 1],
        "rps": len(samples) / wall,
        "n": len(samples),
    }


def run(db: str, blob: str, big: Path, args, s3_env: dict[str, str]) -> dict:
    env, schema = {}, None
    if blob == "s3":
        import boto3

        bucket = f"bench-{secrets.token_hex(4)}"
        boto3.client(
            "s3",
            endpoint_url=s3_env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=bucket)
        env.update(s3_env, TUNEFORGE_BLOB_URL=f"s3://{bucket}/bench")
    if db == "postgresql":
        schema = f"bench_{secrets.token_hex(4)}"
        with create_engine(PG, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        env["TUNEFORGE_DATABASE_URL"] = f"{PG}?options=-csearch_path%3D{schema}"
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, env = start(Path(tmp), env)
        try:
            key = subprocess.run(
                [TUNEFORGE, "keys", "create", "--project", "bench"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()[-1]
            mbps, rss, big_id = upload(url, key, big, proc.pid)
            down = download(url, key, big_id, big.stat().st_size)
            h = {"Authorization": f"Bearer {key}"}
            ids = [
                httpx.post(
                    f"{url}/v1/files",
                    headers=h,
                    data={"purpose": "fine-tune"},
                    files={"file": (f"{i}.jsonl", b"{}\n")},
                ).json()["id"]
                for i in range(args.files)
            ]
            lst = latency(url, key, f"/v1/files?limit={args.limit}", args.clients, args.requests)
            ret = latency(url, key, f"/v1/files/{ids[len(ids) // 2]}", args.clients, args.requests)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    if schema:
        with create_engine(PG, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return {"db": db, "blob": blob, "mbps": mbps, "down": down, "rss": rss, "list": lst, "retrieve": ret}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except Exception:
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="size of the uploaded file")
    ap.add_argument("--files", type=int, default=100, help="small files listed/retrieved")
    ap.add_argument("--limit", type=int, default=100, help="files.list page size")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=50, help="requests per client per operation")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--blob", choices=["local", "s3", "both"], default="local", help="blob backend")
    args = ap.parse_args()
    blobs = ["local", "s3"] if args.blob == "both" else [args.blob]
    moto, s3_env = start_s3() if "s3" in blobs else (None, {})

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jsonl"
        line = b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 + b'"}]}\n'
        with open(big, "wb") as fh:
            for _ in range(args.mb * MB // len(line)):
                fh.write(line)
        dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
        try:
            results = [run(db, blob, big, args, s3_env) for db in dbs for blob in blobs]
        finally:
            if moto is not None:
                moto.terminate()
                moto.wait(30)

    import fastapi
    import sqlalchemy
    import uvicorn

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print("## Files API (`make bench-files`)\n")
    print(
        f"- {time.strftime('%Y-%m-%d')}, commit `{commit}`; {cpu_model()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // (1024**3)} GiB RAM; Python {platform.python_version()}, "
        f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}"
    )
    print(
        f"- upload: one {args.mb} MB file, multipart over loopback (httpx); latency: "
        f"{args.clients} concurrent clients x {args.requests} requests each; list returns "
        f"{min(args.limit, args.files + 1)} files per page. Client and server share the machine.\n"
    )
    print(
        "| database | blobs | upload MB/s | download MB/s | server peak RSS growth (MB) "
        "| list p50 / p99 (ms) | list req/s | retrieve p50 / p99 (ms) | retrieve req/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lst, ret = r["list"], r["retrieve"]
        print(
            f"| {r['db']} | {r['blob']} | {r['mbps']:.0f} | {r['down']:.0f} | {r['rss']:.1f} "
            f"| {lst['p50']:.1f} / {lst['p99']:.1f} | {lst['rps']:.0f} "
            f"| {ret['p50']:.1f} / {ret['p99']:.1f} | {ret['rps']:.0f} |"
        )
    if len(blobs) == 2:
        for db in dbs:
            local, s3 = (next(r for r in results if (r["db"], r["blob"]) == (db, b)) for b in blobs)
            print(
                f"\n{db}: S3 (moto) / local upload throughput = {s3['mbps'] / local['mbps']:.2f}x, "
                f"download = {s3['down'] / local['down']:.2f}x; peak RSS growth {s3['rss']:.1f} MB vs "
                f"{local['rss']:.1f} MB (S3 buffers one {8} MiB part per upload)"
            )


if __name__ == "__main__":
    main()
