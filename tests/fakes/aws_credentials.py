"""A fake AWS credential source: the container credentials endpoint (ECS / EKS Pod Identity), the
EC2 instance metadata service (IMDSv2) and STS AssumeRole, all handing out rotating temporary
credentials.

Each fetch hands out the next set (ASIAFAKE1 / secret-1 / token-1, then ...2), expiring
`expires_in_s` from now, so a test can tell which set signed a request and whether it was refreshed.

- Container: GET /container-credentials, with `Authorization` equal to `authorization` when that is
  set (AWS_CONTAINER_AUTHORIZATION_TOKEN); answers {AccessKeyId, SecretAccessKey, Token, Expiration}.
- IMDSv2: PUT /latest/api/token with x-aws-ec2-metadata-token-ttl-seconds gives a session token; every
  GET under /latest/meta-data/ without that token in x-aws-ec2-metadata-token is 401, as on EC2 with
  IMDSv1 disabled. /latest/meta-data/iam/security-credentials/ names the role, .../<role> gives its
  credentials with Code Success.
- STS: POST / form-encoded Action=AssumeRole&RoleArn=...&RoleSessionName=...&Version=2011-06-15,
  SigV4-signed (service sts) by the caller's own credentials, whose key id must be `source_key_id`
  (the signature itself is the Bedrock fake's business); answers AssumeRoleResponse XML.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from tests.fakes.base import FakeProvider, Recorded, Reply, json_reply


def sts_error(code: str, message: str, status: int) -> Reply:
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>sts-err</RequestId></ErrorResponse>"
    )
    return Reply(status, body.encode(), {"content-type": "text/xml"})


ROLE = "mg-gateway-role"
IMDS_TOKEN = "imds-session-token-1"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"


@dataclass(frozen=True)
class Issued:
    access_key: str
    secret_key: str
    token: str


class FakeAwsCredentialSource(FakeProvider):
    expires_in_s = 3600.0
    authorization = ""
    source_key_id = "AKIDSOURCEPROFILE"

    def __init__(self) -> None:
        super().__init__()
        self.issued: list[Issued] = []
        self._handed_out = threading.Condition(self._lock)

    def reset(self) -> None:
        super().reset()
        self.issued.clear()

    @property
    def container_uri(self) -> str:
        return f"{self.url}/container-credentials"

    def _next(self) -> dict[str, str]:
        with self._lock:
            number = len(self.issued) + 1
            issued = Issued(f"ASIAFAKE{number}", f"secret-{number}", f"token-{number}")
            self.issued.append(issued)
            self._handed_out.notify_all()
        expiration = datetime.fromtimestamp(time.time() + self.expires_in_s, UTC)
        return {
            "AccessKeyId": issued.access_key,
            "SecretAccessKey": issued.secret_key,
            "Token": issued.token,
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Block until `count` sets have been handed out (True) or `timeout_s` passed (False)."""
        with self._handed_out:
            return self._handed_out.wait_for(lambda: len(self.issued) >= count, timeout_s)

    def handle(self, request: Recorded) -> Reply:
        if request.path == "/container-credentials" and request.method == "GET":
            if self.authorization and request.headers.get("authorization") != self.authorization:
                return json_reply({"message": "unauthorized"}, 401)
            return json_reply(self._next())
        if request.path == "/latest/api/token" and request.method == "PUT":
            if not request.headers.get("x-aws-ec2-metadata-token-ttl-seconds"):
                return Reply(400, b"", {"content-type": "text/plain"})
            return Reply(200, IMDS_TOKEN.encode(), {"content-type": "text/plain"})
        if request.path.startswith("/latest/meta-data/") and request.method == "GET":
            if request.headers.get("x-aws-ec2-metadata-token") != IMDS_TOKEN:
                return Reply(401, b"", {"content-type": "text/plain"})
            if request.path == CREDENTIALS_PATH:
                return Reply(200, ROLE.encode(), {"content-type": "text/plain"})
            if request.path == CREDENTIALS_PATH + ROLE:
                answer = {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC"}
                return Reply(
                    200, json.dumps({**answer, **self._next()}).encode(), {"content-type": "text/plain"}
                )
        if request.path == "/" and request.method == "POST":
            return self._assume_role(request)
        return Reply(404, b"", {"content-type": "text/plain"})

    def _assume_role(self, request: Recorded) -> Reply:
        form = {name: values[0] for name, values in parse_qs(request.body.decode()).items()}
        if f"Credential={self.source_key_id}/" not in request.headers.get("authorization", ""):
            return sts_error(
                "InvalidClientTokenId", "The security token included in the request is invalid.", 403
            )
        if form.get("Action") != "AssumeRole" or not form.get("RoleArn", "").startswith("arn:aws:iam::"):
            return sts_error("ValidationError", "1 validation error detected: RoleArn", 400)
        issued = self._next()
        role = form["RoleArn"].rpartition("/")[2]
        body = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
            f"<Credentials><AccessKeyId>{issued['AccessKeyId']}</AccessKeyId>"
            f"<SecretAccessKey>{issued['SecretAccessKey']}</SecretAccessKey>"
            f"<SessionToken>{issued['Token']}</SessionToken><Expiration>{issued['Expiration']}</Expiration>"
            f"</Credentials><AssumedRoleUser><AssumedRoleId>AROAFAKE:{form.get('RoleSessionName', '')}"
            f"</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/{role}/"
            f"{form.get('RoleSessionName', '')}</Arn></AssumedRoleUser></AssumeRoleResult>"
            "<ResponseMetadata><RequestId>sts-req-1</RequestId></ResponseMetadata></AssumeRoleResponse>"
        )
        return Reply(200, body.encode(), {"content-type": "text/xml"})
