# Packagers: `make install DESTDIR=/staging prefix=/usr` (see scripts/install.sh).
prefix ?= /usr
DESTDIR ?=

.PHONY: build install
build:
	cargo build --release --locked --bins

install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(prefix)" scripts/install.sh --no-build
