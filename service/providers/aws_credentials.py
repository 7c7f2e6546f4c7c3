"""AWS credentials for signing, from botocore's own credential chain, refreshed off the request path.

Static keys given to the gateway (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) are
used as they are. Otherwise botocore's default chain finds them, as every AWS SDK does, reading the
environment itself: AWS_PROFILE's profile in ~/.aws/config and ~/.aws/credentials (AWS_CONFIG_FILE
and AWS_SHARED_CREDENTIALS_FILE move them), including assume-role, SSO and credential-process
profiles; web identity (AWS_WEB_IDENTITY_TOKEN_FILE, EKS); the container credentials endpoint
(AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI, ECS and EKS Pod Identity); the EC2 instance
role through IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT moves it). botocore is the reference for that
chain's order and rules, which a hand-written resolver would get subtly wrong.

Temporary credentials carry an expiry. botocore would refresh them inside `get_frozen_credentials`,
a blocking HTTP call (IMDS, STS, the container endpoint), so it is only ever called in a thread
(renewing.py): the first time, in the background from 15 minutes before expiry (botocore's
advisory window), and while a call waits only within the last 10 (its mandatory window).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from service.errors import UpstreamError
from service.providers.renewing import Renewing

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

log = logging.getLogger(__name__)

STATIC_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
PROFILE = "AWS_PROFILE"
ADVISORY_S = 15 * 60  # botocore's own windows (credentials.py)
MANDATORY_S = 10 * 60


def resolve(credentials: Mapping[str, str], settings: Mapping[str, Any], region: str) -> Credentials | None:
    """The static keys when both are given, else what botocore's default chain finds (None: nothing).
    The chain's own calls (STS for an assume-role profile) go to `region`, the one the gateway signs
    for, unless the profile names its own. Blocking (the chain may call IMDS, STS or the container
    endpoint): run it in a thread."""
    from botocore.credentials import Credentials
    from botocore.session import Session

    if all(credentials.get(name) for name in STATIC_KEYS):
        token = str(settings.get("AWS_SESSION_TOKEN") or "") or None
        return Credentials(credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"], token)
    session = Session(profile=str(settings[PROFILE])) if settings.get(PROFILE) else Session()
    if not session.get_config_variable("region"):
        session.set_config_variable("region", region)
    found: Credentials | None = session.get_credentials()
    return found


def chain_finds_credentials(region: str) -> bool:
    """Whether botocore's default chain finds credentials in this process's environment (static keys,
    the default profile's files, web identity, the container endpoint, the EC2 instance role through
    IMDS). Blocking, and on a host that is not on EC2 it waits for IMDS's timeouts (about a second;
    AWS_EC2_METADATA_DISABLED=true skips it): only run when settings load, before any event loop."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return resolve({}, {}, region) is not None
    except (BotoCoreError, ClientError, RuntimeError, ValueError, OSError) as exc:
        log.warning("AWS's credential chain failed while looking for credentials: %r", exc)
        return False


class AwsCredentials:
    """The current credentials for a request, as botocore's immutable ReadOnlyCredentials."""

    def __init__(
        self, provider: str, credentials: Mapping[str, str], settings: Mapping[str, Any], region: str
    ) -> None:
        self._provider = provider
        self._inputs = (credentials, settings, region)
        self._credentials: Credentials | None = None
        self._current = Renewing(provider, self._fetch, self._needs(ADVISORY_S), self._needs(MANDATORY_S))

    async def current(self) -> ReadOnlyCredentials:
        return await self._current.get()

    def _needs(self, window_s: int) -> Any:
        def needs(_: ReadOnlyCredentials) -> bool:
            refresh_needed = getattr(self._credentials, "refresh_needed", None)  # temporary ones only
            return bool(refresh_needed and refresh_needed(window_s))

        return needs

    async def _fetch(self) -> ReadOnlyCredentials:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(self._frozen)
        except (BotoCoreError, ClientError, RuntimeError, ValueError) as exc:
            # In full for the operator only: the message may name the profile, role or account.
            log.warning("%s: no AWS credentials: %r", self._provider, exc)
            raise UpstreamError(
                f"{self._provider} could not get AWS credentials ({type(exc).__name__}); see the log."
            ) from None

    def _frozen(self) -> ReadOnlyCredentials:
        if self._credentials is None:
            self._credentials = resolve(*self._inputs)
            if self._credentials is None:
                raise UpstreamError(
                    f"{self._provider} found no AWS credentials: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where a container or instance role "
                    "provides them"
                )
        return self._credentials.get_frozen_credentials()  # refreshes temporary credentials when due

    async def aclose(self) -> None:
        await self._current.aclose()
