"""What the tests need that is built rather than installed (the test guest, the e2e
cluster's binaries, skaffold, container images), made by `make deps` / `make deps-e2e`
(`scripts/deps.py`) and only looked up by the tests: no test builds one as a side effect.
Standard library only: `scripts/deps.py` imports it before the virtualenv exists."""
