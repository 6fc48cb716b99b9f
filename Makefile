# Developer and operator shortcuts. Recipes are indented with tabs.

IMAGE        ?= blobprox:latest
KEYGEN_IMAGE ?= blobprox-keygen:latest
# The user the image runs as; match the owner of the host directories mounted into it.
# (BLOBPROX_UID, not UID: bash keeps UID read-only and does not export it.)
BLOBPROX_UID ?= 10001
BLOBPROX_GID ?= 10001

.PHONY: docker-build-server docker-build-keygen test run bench

# One image serves both of the original's services: `blobprox serve` (its default command) and
# `blobprox keygen`. docker-build-keygen builds that same image and adds the keygen tag for
# scripts that refer to the key generator's image by name; docker-compose.yaml uses $(IMAGE).
docker-build-server:
	docker build --build-arg UID=$(BLOBPROX_UID) --build-arg GID=$(BLOBPROX_GID) -t $(IMAGE) .

docker-build-keygen: docker-build-server
	docker tag $(IMAGE) $(KEYGEN_IMAGE)

# Formatting, lints, Rust tests, Azurite and Python interoperability tests (what CI runs).
test:
	scripts/test.sh

# Development start: ./data storage, keys and credentials made under ./.blobprox.
run:
	cargo run --release -- serve

# Throughput and memory; SIZES, REPEAT, BLOB_FORMAT etc. pass through (see bench/README.md).
bench:
	bench/bench.sh
