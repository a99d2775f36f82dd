"""The providers multitask speaks, for configuring one by hand or writing your own.

from multitask.providers import AzureOpenAI
client = multitask.Client("azure:my-deployment", provider=AzureOpenAI(api_version="..."))
"""

from ._providers import *  # noqa: F403 - this module is the public face of _providers
from ._providers import __all__ as __all__
