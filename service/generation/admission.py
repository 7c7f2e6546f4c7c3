"""Admission: the checks that turn a wire request into a `GenerationRequest` this project may run.

In order, and all before any money is reserved or any provider called: the model is resolved (404),
the project's allowlist is applied (403), the request is validated against the model's capabilities
(400 with `param`), and the model's provider must be configured on this gateway (404).

A route (an alias naming several models, tried in order: routing.py) is admitted target by target:
the project's allowlist must allow the route's name, and each target goes through the same checks;
a target that fails one is skipped before anything is called. If none passes, the answer is the
first target's refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from fnmatch import fnmatchcase

from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import Catalog, ModelSpec
from service.errors import BadRequest, MgError, ModelNotAllowed, ProviderNotConfigured
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
    check_allowed(project, model.id)
    return model


def check_allowed(project: Project, name: str) -> None:
    if not model_allowed(project, name):
        raise ModelNotAllowed(
            f"Project {project.name!r} may not use {name}; its allowlist is {', '.join(project.allow)}. "
            f"An admin changes it with `mg projects update {project.name} --allow PATTERN ...`.",
            param="model",
        )


Check = Callable[[ModelSpec, GenerationRequest], GenerationRequest]


@dataclass(frozen=True)
class Admitted:
    """What a request may run: its targets in order (one, unless it names a route), and the route's
    targets skipped before anything was called, with why."""

    targets: tuple[GenerationRequest, ...]
    skipped: tuple[tuple[str, MgError], ...] = ()
    route: str = ""  # the route's name, when the request named one

    @property
    def first(self) -> GenerationRequest:
        return self.targets[0]


def admit_targets(
    request: pb.GenerateImagesRequest,
    project: Project,
    catalog: Catalog,
    configured: Collection[str],
    operation: str = GENERATE,
    check: Check | None = None,
    streamed: bool = False,
) -> Admitted:
    """`request` (an edit's or variation's fields shared with generations, for those) admitted as
    `operation`, for the model or route it names: the targets that can run it, in order. `check`
    adds what is the operation's own (edits.py) once a model is known; `streamed`: the call answers
    with events (service/api/events.py)."""
    route = catalog.route(request.model)
    if route is None:
        model = resolve_allowed(catalog, project, request.model, configured)
        return Admitted((_admit_model(request, model, configured, operation, check, streamed),))
    check_allowed(project, request.model)
    targets: list[GenerationRequest] = []
    skipped: list[tuple[str, MgError]] = []
    for model in route:
        try:
            check_allowed(project, model.id)
            targets.append(_admit_model(request, model, configured, operation, check, streamed))
        except MgError as refusal:
            skipped.append((model.id, refusal))
    if not targets:
        raise skipped[0][1]
    return Admitted(tuple(targets), tuple(skipped), request.model)


def _admit_model(
    request: pb.GenerateImagesRequest,
    model: ModelSpec,
    configured: Collection[str],
    operation: str,
    check: Check | None,
    streamed: bool,
) -> GenerationRequest:
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
