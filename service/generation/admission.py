"""Admission: the checks that turn a wire request into a `GenerationRequest` this project may run.

In order, and all before any money is reserved or any provider called: the model is resolved (404),
the project's allowlist is applied (403), the request is validated against the model's capabilities
(400 with `param`), and the model's provider must be configured on this gateway (404).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from fnmatch import fnmatchcase

from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import Catalog, ModelSpec
from service.errors import BadRequest, ModelNotAllowed, ProviderNotConfigured
from service.generation.validation import GENERATE, GenerationRequest, validate
from service.providers.registry import setup_hint
from service.stores.base import Project


def model_allowed(project: Project, model_id: str) -> bool:
    return not project.allow or any(fnmatchcase(model_id, pattern) for pattern in project.allow)


def resolve_allowed(
    catalog: Catalog, project: Project, name: str, configured: Collection[str] = ()
) -> ModelSpec:
    """The catalog model `name` (an id, an alias or a bare model name) stands for, if the project
    may use it."""
    if not name:
        raise BadRequest("model is required, e.g. 'local/sketch'.", param="model")
    model = catalog.resolve(name, configured)
    if not model_allowed(project, model.id):
        raise ModelNotAllowed(
            f"Project {project.name!r} may not use {model.id}; its allowlist is {', '.join(project.allow)}. "
            f"An admin changes it with `mg projects update {project.name} --allow PATTERN ...`.",
            param="model",
        )
    return model


def admit(
    request: pb.GenerateImagesRequest,
    project: Project,
    catalog: Catalog,
    configured: Collection[str],
    operation: str = GENERATE,
    check: Callable[[ModelSpec, GenerationRequest], GenerationRequest] | None = None,
    streamed: bool = False,
) -> GenerationRequest:
    """`request` (an edit's or variation's fields shared with generations, for those) admitted as
    `operation`; `check` adds what is the operation's own (edits.py) once the model is known.
    `streamed`: the call answers with events (service/api/events.py)."""
    model = resolve_allowed(catalog, project, request.model, configured)
    generation = validate(request, model, operation, streamed)
    if check is not None:
        generation = check(model, generation)
    if model.provider not in configured:
        raise ProviderNotConfigured(
            f"{model.id} is unavailable: provider {model.provider!r} is not configured on this gateway "
            f"({setup_hint(model.provider)}).",
            param="model",
        )
    return generation
