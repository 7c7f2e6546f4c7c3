"""Azure OpenAI: OpenAI's image models (DALL-E 3, GPT image) deployed in a customer's Azure resource.

POST {endpoint}/openai/deployments/{deployment}/images/generations?api-version={version} (JSON), and
with a reference image .../images/edits?api-version={version} (multipart), authenticated by the
resource key in an `api-key` header. The bodies are OpenAI's (openai.py builds them, with the same
quality mapping, GPT image fields and edit form) without `model`: the deployment names the model.
Answers are OpenAI's too (base64 images, GPT image token usage), plus per-image content-filter
annotations the gateway does not pass on.

Auth: the resource key in `api-key` (AZURE_OPENAI_API_KEY) when it is set; else Microsoft Entra ID,
`Authorization: Bearer <token>` for the Cognitive Services scope (entra.py), named by azure-identity's
variables:
- an app registration: AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, or instead of the
  secret a workload identity's AZURE_FEDERATED_TOKEN_FILE; AZURE_AUTHORITY_HOST (optional);
- else the host's managed identity (managed_identity.py): App Service's endpoint (IDENTITY_ENDPOINT
  and IDENTITY_HEADER, which turn the provider on), or IMDS; AZURE_CLIENT_ID alone (which turns the
  provider on) names a user-assigned identity. With only AZURE_OPENAI_ENDPOINT set, the provider is
  on if IMDS gives the system-assigned identity a token when settings load (off Azure that waits at
  most a second, and leaves Azure off).
The identity needs the "Cognitive Services OpenAI User" role on the resource.

Settings use the official SDK's names: AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT (the resource,
e.g. https://contoso.openai.azure.com) and OPENAI_API_VERSION (default DEFAULT_API_VERSION, the
first version that serves both DALL-E 3 and GPT image models, generations and edits). A deployment is
named after its model unless the config file maps it: `providers.azure.deployments: {gpt-image-1:
img-prod-eastus}` (keys are the catalog's upstream ids).

Refusals: the content filter answers 400 with `content_policy_violation` (inner_error.code
`ResponsibleAIPolicyViolation`), `contentFilter` / `content_filter` for a filtered output, and GPT
image models OpenAI's `moderation_blocked`; all are ContentPolicyViolation, never retried. 429s carry
`retry-after-ms` (honoured, upstream.py). dall-e-3 takes one image per call and has no edits.

providerOptions.azure: the keys providerOptions.openai takes (openai.py), with the same meaning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from service.config import ProviderConfig, Settings, SettingsError
from service.errors import EditNotSupported
from service.providers import openai
from service.providers.adapter import HttpAdapter
from service.providers.base import ImageCall, ImageCallResult
from service.providers.managed_identity import APP_SERVICE_ENDPOINT, APP_SERVICE_HEADER, IMDS_HOST_ENV
from service.providers.options import OptionsSchema
from service.providers.spec import ProviderSpec
from service.providers.upstream import Upstream

if TYPE_CHECKING:
    from service.providers.entra import BearerTokens

NAME = "azure"
API_VERSION_ENV = "OPENAI_API_VERSION"
DEFAULT_API_VERSION = "2025-04-01-preview"
REFUSAL_CODES = frozenset(
    {"content_policy_violation", "moderation_blocked", "contentFilter", "content_filter"}
)
RESPONSIBLE_AI = "ResponsibleAIPolicyViolation"
ENTRA_RESOURCE = "https://cognitiveservices.azure.com"
ENTRA_SCOPE = f"{ENTRA_RESOURCE}/.default"
ENTRA_CLIENT = "AZURE_CLIENT_ID"
ENTRA_REQUIRED = ("AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
FEDERATED_TOKEN_ENV = "AZURE_FEDERATED_TOKEN_FILE"  # workload identity (AKS), instead of the secret
OPTIONS = OptionsSchema(NAME, openai.OPTIONS.options)


def is_refusal(status: int, body: Any, text: str) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    inner = error.get("inner_error") or error.get("innererror")
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return (
        error.get("code") in REFUSAL_CODES
        or inner_code == RESPONSIBLE_AI
        or error.get("type") == "image_generation_user_error"
    )


def check_file_settings(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """providers.azure.deployments must map model ids to deployment names."""
    mapping = entry.get("deployments", {})
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
    ):
        return "deployments", "providers.azure.deployments must map model ids to deployment names"
    return None


def _service_principal(settings: Mapping[str, Any]) -> bool:
    """Whether the settings describe an app registration (a tenant, a secret or a federated token);
    without any, the app's identity is the host's managed identity."""
    return any(settings.get(name) for name in (*ENTRA_REQUIRED, FEDERATED_TOKEN_ENV))


def check_credentials(credentials: Mapping[str, str], settings: Mapping[str, Any]) -> str | None:
    """Without a resource key, an app registration needs its client id, tenant and a secret or
    federated token file together; a managed identity needs nothing (AZURE_CLIENT_ID alone names a
    user-assigned one)."""
    if credentials.get("AZURE_OPENAI_API_KEY") or not _service_principal(settings):
        return None
    missing = [name for name in (ENTRA_CLIENT, *ENTRA_REQUIRED) if not settings.get(name)]
    if FEDERATED_TOKEN_ENV in settings:
        missing = [name for name in missing if name != "AZURE_CLIENT_SECRET"]
    if missing:
        given = next(
            name for name in (ENTRA_CLIENT, *ENTRA_REQUIRED, FEDERATED_TOKEN_ENV) if settings.get(name)
        )
        verb = "is" if len(missing) == 1 else "are"
        return f"{given} is set for Microsoft Entra ID but {' and '.join(missing)} {verb} not"
    return None


def entra_tokens(config: ProviderConfig) -> BearerTokens | None:
    """Entra ID tokens when the provider has no resource key: an app registration's when its settings
    describe one (check_credentials held them complete), else the host's managed identity's."""
    if config.api_key:
        return None
    # loads its HTTP client: on first use
    from service.providers.entra import ClientProof, EntraTokens, ManagedIdentityTokens
    from service.providers.managed_identity import ManagedIdentity

    settings = config.settings
    if not _service_principal(settings):
        return ManagedIdentityTokens(NAME, ManagedIdentity.from_settings(settings), ENTRA_RESOURCE)
    proof = ClientProof(
        str(settings.get("AZURE_CLIENT_SECRET") or ""), str(settings.get(FEDERATED_TOKEN_ENV) or "")
    )
    return EntraTokens(
        NAME,
        str(settings.get(AUTHORITY_ENV) or ""),
        str(settings["AZURE_TENANT_ID"]),
        str(settings[ENTRA_CLIENT]),
        proof,
        ENTRA_SCOPE,
    )


def managed_identity_found(environ: Mapping[str, str]) -> bool:
    """An endpoint and no credential: on if this host's managed identity gives a token."""
    from service.providers.managed_identity import managed_identity_answers

    return managed_identity_answers(environ, ENTRA_RESOURCE)


def deployments(config: ProviderConfig) -> dict[str, str]:
    """upstream model id -> deployment name, from the config file's providers.azure.deployments."""
    problem = check_file_settings(config.settings)
    if problem is not None:
        raise SettingsError(problem[1])
    return dict(config.settings.get("deployments") or {})


class AzureOpenAIProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    def __init__(
        self,
        upstream: Upstream,
        api_version: str,
        deployments: dict[str, str],
        tokens: BearerTokens | None = None,
    ) -> None:
        super().__init__(upstream)
        self._query = urlencode({"api-version": api_version})
        self._deployments = deployments
        self._tokens = tokens

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> AzureOpenAIProvider:
        upstream = Upstream.from_config(config, settings, cls.headers(config), cls.is_refusal)
        api_version = str(config.settings.get(API_VERSION_ENV) or DEFAULT_API_VERSION)
        return cls(upstream, api_version, deployments(config), entra_tokens(config))

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"api-key": config.api_key} if config.api_key else {}

    async def _auth(self) -> dict[str, str] | None:
        return None if self._tokens is None else await self._tokens.header()

    def path(self, model: str, operation: str) -> str:
        deployment = quote(self._deployments.get(model, model), safe="")
        return f"/openai/deployments/{deployment}/images/{operation}?{self._query}"

    async def generate(self, call: ImageCall) -> ImageCallResult:
        model, reference = call.upstream_model, call.reference_image
        if reference is not None and model == "dall-e-3":
            raise EditNotSupported("dall-e-3 does not support edits.", param="reference_image")
        body, warnings = openai.request_body(call, OPTIONS)
        del body["model"]  # the deployment is the model; the API defines no such field
        if reference is None:
            payload, response = await self._upstream.json_object(
                "POST", self.path(model, "generations"), call.deadline, json=body, headers=await self._auth()
            )
        else:
            form = {name: str(value) for name, value in body.items()}
            files = await asyncio.to_thread(openai.edit_files, call, OPTIONS)
            payload, response = await self._upstream.json_object(
                "POST",
                self.path(model, "edits"),
                call.deadline,
                data=form,
                files=files,
                headers=await self._auth(),
            )
        request_id = response.headers.get("apim-request-id") or response.headers.get("x-request-id")
        return openai.read_answer(self.name, payload, request_id, warnings)

    async def aclose(self) -> None:
        if self._tokens is not None:
            await self._tokens.aclose()
        await super().aclose()


PROVIDER = ProviderSpec(
    NAME,
    AzureOpenAIProvider.create,
    OPTIONS,
    credentials=("AZURE_OPENAI_API_KEY",),
    base_url_env="AZURE_OPENAI_ENDPOINT",
    default_base_url="",  # each resource has its own endpoint
    summary="Azure OpenAI (deployments of OpenAI's image models)",
    enabled_by=(ENTRA_CLIENT, APP_SERVICE_ENDPOINT),
    settings=(
        API_VERSION_ENV,
        *ENTRA_REQUIRED,
        FEDERATED_TOKEN_ENV,
        AUTHORITY_ENV,
        APP_SERVICE_HEADER,
        IMDS_HOST_ENV,
    ),
    probe_by=("AZURE_OPENAI_ENDPOINT",),
    probe=managed_identity_found,
    check_credentials=check_credentials,
    file_settings=("deployments",),
    check_file_settings=check_file_settings,
)
