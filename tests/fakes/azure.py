"""A fake Azure OpenAI resource: deployments of OpenAI's image models behind Azure's URL, key and
api-version rules, with Azure's error bodies (from Azure's GA inference spec, schemas/azure-openai.json,
and the OpenAI definition the preview versions serve for GPT image models).

- POST /openai/deployments/{deployment}/images/generations|edits?api-version=...; an unknown
  deployment is 404 DeploymentNotFound, a missing or unknown api-version 404 "Resource not found",
  a GPT image deployment on a version before its first preview 400 (as a version that lacks a
  feature answers).
- `api-key: <key>` (a wrong or missing key: Azure's 401 body). With `bearer_token` set (a resource
  whose clients use Microsoft Entra ID), `Authorization: Bearer <that token>` instead, and an
  `api-key` is then refused, as with key auth disabled on the resource.
- dall-e-3 bodies are checked against the GA imageGenerationsRequest (closed: n is 1, no `model`);
  GPT image bodies against OpenAI's CreateImageRequest / CreateImageEditRequest, without `model`.
- The content filter answers as Azure's does: 400 content_policy_violation with
  inner_error.code ResponsibleAIPolicyViolation (dall-e-3), moderation_blocked (GPT image); 429s
  carry retry-after-ms and retry-after. DALL-E 3 answers carry content_filter_results per image.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.base import Recorded, Reply, check_body, json_reply
from tests.fakes.openai import FakeOpenAI, error

# deployment name -> the model it serves (a resource's own choice of names)
DEPLOYMENTS = {
    "dall-e-3": "dall-e-3",
    "gpt-image-1": "gpt-image-1",
    "gpt-image-1-mini": "gpt-image-1-mini",
    "gpt-image-1.5": "gpt-image-1.5",
    "img-prod-eastus": "gpt-image-1",
}
VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2})(-preview)?$")
FIRST_GPT_IMAGE_VERSION = "2025-04-01"
PATH = re.compile(r"^/openai/deployments/([^/]+)/images/(generations|edits)$")
SAFE = {"filtered": False, "severity": "safe"}
FILTER_RESULTS = {"hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}


def azure_error(code: str, message: str, status: int, **headers: str) -> Reply:
    return json_reply({"error": {"code": code, "message": message}}, status, **headers)


class FakeAzureOpenAI(FakeOpenAI):
    PROVIDER = "azure"
    BASE_PATH = ""  # the resource endpoint itself
    SMOKE_MODEL = "azure/gpt-image-1"
    api_key = "azure-fake-resource-key"

    bearer_token = ""

    def _authorized(self, request: Recorded) -> bool:
        if self.bearer_token:
            return (
                "api-key" not in request.headers
                and request.headers.get("authorization") == f"Bearer {self.bearer_token}"
            )
        return request.headers.get("api-key") == self.api_key

    def handle(self, request: Recorded) -> Reply:
        if not self._authorized(request):
            return azure_error(
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
                "a valid key for an active subscription and use a correct regional API endpoint for your "
                "resource.",
                401,
            )
        route = PATH.match(request.path)
        version = VERSION.match((request.query.get("api-version") or [""])[0])
        if request.method != "POST" or route is None or version is None:
            return azure_error("404", "Resource not found", 404)
        model = DEPLOYMENTS.get(route.group(1))
        if model is None:
            return azure_error(
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within "
                "the last 5 minutes, please wait a moment and try again.",
                404,
            )
        if model != "dall-e-3" and (version.group(1) < FIRST_GPT_IMAGE_VERSION or not version.group(2)):
            return azure_error("OperationNotSupported", f"{model} is not supported by this API version.", 400)
        if route.group(2) == "edits":
            if model == "dall-e-3":
                return azure_error("OperationNotSupported", "The images/edits operation does not work "
                                   "with the specified model, dall-e-3.", 400)  # fmt: skip
            return self._edit(request, deployed=model)
        body = request.json
        if model == "dall-e-3":
            check_body("azure-openai.json", "imageGenerationsRequest", body)
        else:
            check_body("openai.json", "CreateImageRequest", body)
            if "model" in body:
                return error("Unknown parameter: 'model'.", param="model", code="unknown_parameter")
        reply = self._generate({**body, "model": model})
        if model == "dall-e-3" and reply.status == 200:
            return self._annotated(reply)
        return reply

    def _annotated(self, reply: Reply) -> Reply:
        """DALL-E 3 answers as Azure sends them: content filter results on every image."""
        payload: dict[str, Any] = json.loads(reply.body)
        for item in payload["data"]:
            item["content_filter_results"] = FILTER_RESULTS
            item["prompt_filter_results"] = FILTER_RESULTS
        check_body("azure-openai.json", "generateImagesResponse", payload, closed=False)
        return json_reply(payload, **{"apim-request-id": "apim-fake-1"})

    def _trigger(self, prompt: str, gpt: bool) -> Reply | None:
        if "BLOCKME" in prompt and not gpt:
            return json_reply(
                {
                    "error": {
                        "code": "content_policy_violation",
                        "message": "Your request was rejected as a result of our safety system. Your prompt "
                        "may contain text that is not allowed by our safety system.",
                        "type": "invalid_request_error",
                        "inner_error": {
                            "code": "ResponsibleAIPolicyViolation",
                            "content_filter_results": {
                                **FILTER_RESULTS,
                                "sexual": {"filtered": True, "severity": "medium"},
                            },
                        },
                    }
                },
                400,
            )
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return azure_error(
                "429",
                "Requests to the Images_Generations Operation under Azure OpenAI API version "
                "2025-04-01-preview have exceeded call rate limit. Please retry after 1 second.",
                429,
                **{"retry-after-ms": "300", "retry-after": "1"},
            )
        return super()._trigger(prompt, gpt)
