"""lrc's tests. A regular package, so that workers spawned by multi-process tests import these modules by name
(tests.parallel...) even when a third-party distribution installs a top-level `tests` package of its own."""
