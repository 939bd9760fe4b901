"""Pool configuration (moving into a package: the models first, unchanged)."""

from gleitzeit_llm.config.models import *  # noqa: F403
from gleitzeit_llm.config.models import ENV_CONFIG, ENV_INSTANCES, ENV_MAX_CONCURRENT, __all__  # noqa: F401
