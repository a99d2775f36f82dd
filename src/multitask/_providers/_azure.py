"""Azure OpenAI: deployment URLs, `api-version`, and the `api-key` header or a bearer token."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .._exceptions import ConfigurationError, ContentFilterError, MultitaskError, ProviderError
from ._openai_chat import OpenAIChat
from ._provider import register_provider
from ._request import RequestSpec

__all__ = ["AzureOpenAI"]

#: The GA API version used when neither the caller nor `OPENAI_API_VERSION` names one.
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAI(OpenAIChat):
    """Azure OpenAI (`azure:DEPLOYMENT`): `{endpoint}/openai/deployments/{deployment}/...`.

    The endpoint comes from `AZURE_OPENAI_ENDPOINT`, the key from `AZURE_OPENAI_API_KEY`
    (sent as `api-key`), or an Entra ID token from `azure_ad_token` /
    `AZURE_OPENAI_AD_TOKEN` (sent as a bearer token). The stream is OpenAI's, with Azure's
    extras: a first chunk with no choices and `prompt_filter_results`, per-choice
    `content_filter_results`, and `content_filter` finishes (a `ContentFilterError`).
    """

    name = "azure"
    default_base_url = ""
    base_url_env = "AZURE_OPENAI_ENDPOINT"
    api_key_env = ("AZURE_OPENAI_API_KEY",)
    max_tokens_field = "max_tokens"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_version: str | None = None,
        azure_ad_token: str | None = None,
    ) -> None:
        super().__init__(base_url=base_url, api_key=api_key)
        self.api_version = (
            api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION
        )
        self._ad_token = azure_ad_token or os.environ.get("AZURE_OPENAI_AD_TOKEN") or None

    def endpoint(self, spec: RequestSpec) -> str:
        base = self.base_url.removesuffix("/openai")
        return (
            f"{base}/openai/deployments/{spec.model}/chat/completions"
            f"?api-version={self.api_version}"
        )

    def auth_headers(self) -> dict[str, str]:
        if self._ad_token:
            return {"authorization": f"Bearer {self._ad_token}"}
        return {"api-key": self._api_key} if self._api_key else {}

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> MultitaskError:
        """Azure refuses a prompt its filter blocks with a 400 whose code is `content_filter`."""
        error = super().error(status, headers, body)
        data = error.body if isinstance(error, ProviderError) else None
        details = data.get("error") if isinstance(data, dict) else None
        if isinstance(details, dict) and details.get("code") == "content_filter":
            return self.redact(
                ContentFilterError(
                    f"Azure's content filter refused the prompt (HTTP {status}): "
                    f"{details.get('message') or 'no message'}"
                )
            )
        return error

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._api_key, self._ad_token) if s)

    def check_credentials(self) -> None:
        if not self.base_url:
            raise ConfigurationError(
                "no Azure OpenAI endpoint: set AZURE_OPENAI_ENDPOINT or pass base_url "
                "(https://RESOURCE.openai.azure.com)"
            )
        if not (self._api_key or self._ad_token):
            raise ConfigurationError(
                "no Azure OpenAI credentials: set AZURE_OPENAI_API_KEY or "
                "AZURE_OPENAI_AD_TOKEN, or pass api_key"
            )


register_provider("azure", AzureOpenAI)
