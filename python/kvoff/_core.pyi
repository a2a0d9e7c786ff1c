"""Type stubs for the extension module ``kvoff._core`` (hand-written; checked by mypy.stubtest)."""

__version__: str

# --- manager section (OffloadingManager, LoadStoreSpec, PrepareStoreOutput, OffloadingEvent) ---

# --- stats section (StatsAccumulator, OffloadingConnectorStats) ---

# --- jobs section (JobTracker) ---
