"""The benchmark (``python -m bench.run``) and the soak (``python -m bench.soak``); see
bench/README.md. Imports nothing itself: its modules also run in bench/.venv-channels."""
