# The two fresh-machine commands of the README.
.PHONY: demo test
demo:
	./scripts/setup.sh && ./scripts/demo.sh
test:
	./scripts/setup.sh --dev && ./scripts/test.sh
