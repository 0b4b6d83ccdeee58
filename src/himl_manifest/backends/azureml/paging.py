"""The listing of a workspace's jobs as the JSON the service sent, page by page.

The SDK's public ``jobs.list`` builds an entity per job (slow for thousands, and lossy: it drops
fields the run records need); this follows the REST call's ``nextLink`` pages through the SDK
client's own pipeline (its credential, retries, timeouts) and hands back each job's JSON. When
this azure-ai-ml lacks the internals it reads, the caller uses the public listing.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any


def json_pages(operations: Any, kind: Any, filters: Mapping[str, str]) -> Iterable[Any] | None:
    """Every job of a ``jobs.list`` REST call, as the JSON the service sent, following its
    ``nextLink`` pages through the SDK client's own pipeline; None when this azure-ai-ml has
    not the internals this reads (the caller then uses the public listing)."""
    try:
        from azure.ai.ml._restclient.arm_ml_service.operations._operations import (
            build_jobs_list_request,
        )
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceExistsError,
            ResourceNotFoundError,
            map_error,
        )
        from azure.core.rest import HttpRequest

        rest = operations.service_client_01_2024_preview_arm.jobs
        client, config, scope = rest._client, rest._config, operations._operation_scope
        endpoint = rest._serialize.url("base_url", config.base_url, "str", skip_quote=True)
        first = build_jobs_list_request(
            resource_group_name=scope.resource_group_name,
            workspace_name=operations._workspace_name,
            subscription_id=config.subscription_id,
            list_view_type=kind,
            api_version=config.api_version,
            **filters,
        )
    except (ImportError, AttributeError, TypeError):
        return None
    errors = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError}
    extra = dict(getattr(operations, "_kwargs", None) or {})

    def pages() -> Iterable[Any]:
        request: Any = first
        while request is not None:
            request.url = client.format_url(request.url, endpoint=endpoint)
            answer = client._pipeline.run(request, stream=False, **extra)
            response = answer.http_response
            if response.status_code != 200:
                map_error(status_code=response.status_code, response=response, error_map=errors)
                raise HttpResponseError(response=response)
            # the pipeline's ContentDecodePolicy has decoded the body already
            body = answer.context.get("deserialized_data")
            if not isinstance(body, Mapping):
                body = response.json()
            yield from body.get("value") or []
            request = None
            link = body.get("nextLink")
            if link:
                parsed = urllib.parse.urlparse(link)
                query = urllib.parse.parse_qs(parsed.query)
                query["api-version"] = [config.api_version]
                request = HttpRequest("GET", urllib.parse.urljoin(link, parsed.path), params=query)

    return pages()
