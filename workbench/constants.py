"""Names shared across modules (kept dependency-free)."""

#: The category a router assigns to low-confidence prompts ("Robust-CoE"); the
#: category-to-expert map sends it to a strong generalist.
FALLBACK_CATEGORY = "fallback"

#: Environment variable naming the shared real-data folder (default ``../shared/data``).
SHARED_DATA_ENV = "COE_SHARED_DATA"
