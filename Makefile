# The two commands: `make demo` runs the whole system on this machine, `make test` checks it.
# Both set themselves up first (system packages, .venv) on a fresh Debian/Ubuntu/Pi OS machine.
.PHONY: demo test bootstrap bench-edge bench-cloud clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@.venv/bin/smaint demo

test: bootstrap
	@scripts/test.sh

clean:
	rm -rf .venv var .mypy_cache .ruff_cache .pytest_cache firmware/esp32/build-host
