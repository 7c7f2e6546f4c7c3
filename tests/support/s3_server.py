"""A real S3-compatible HTTP server for tests: moto's server mode (moto[server] from PyPI).

Chosen because it installs from PyPI with no Docker and no downloaded binaries (MinIO is not in
the reachable registries), speaks the S3 REST API over HTTP (boto3 needs no special casing), and
starts in about a second.
"""

from __future__ import annotations

import subprocess
import sys
import time

import boto3
import httpx

from tests.support.ports import free_port

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        moto = [
            sys.executable,
            "-c",
            "from moto.server import main; main()",
            "-p",
            str(self.port),
            "-H",
            "127.0.0.1",
        ]
        self.process = subprocess.Popen(moto, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                httpx.get(self.url, timeout=0.5)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def env(self, bucket: str) -> dict[str, str]:
        return {
            "MG_S3_BUCKET": bucket,
            "MG_S3_ENDPOINT_URL": self.url,
            "MG_S3_REGION": "us-east-1",
            "MG_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "MG_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
