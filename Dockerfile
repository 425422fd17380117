# syntax=docker/dockerfile:1
# LargeForge's image: one static binary (CGO off: the pure Go GoMLX backend
# and the embedded nats-server), run as a non-root user on a distroless base.
# deploy/kubernetes names it as "largeforge" (kustomize's images: maps it to
# the registry). Build: docker build -t ghcr.io/largeforge/largeforge:TAG .
# (Not built in this repository's tests: no container runtime there.)

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w -X github.com/largeforge/largeforge.Version=${VERSION}" -o /out/largeforge ./cmd/largeforge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/largeforge /usr/local/bin/largeforge
# 65532: distroless's nonroot user; the manifests run as it (runAsNonRoot).
USER 65532:65532
EXPOSE 8080 9464
ENTRYPOINT ["/usr/local/bin/largeforge"]
