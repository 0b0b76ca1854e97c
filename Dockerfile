# syntax=docker/dockerfile:1
# The dmfexport container image: a static binary on an empty base, with CA certificates and a
# non-root user, and nothing else (no shell). `make image` builds the same image without a Docker
# daemon (cmd/dmfimage, deploy/image.go); deploy's tests hold this file and that code in step.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/dmfexport/dmfexport .
#   docker run -v ./dmfexport.yaml:/etc/dmfexport/dmfexport.yaml:ro --env-file secrets.env \
#     -p 127.0.0.1:9310:9310 ghcr.io/dmfexport/dmfexport

# The go directive of go.mod: the oldest Go that builds the module.
ARG GO_VERSION=1.26.8

# The build stage runs on the build machine's platform and cross-compiles for the target's
# (docker buildx build --platform linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=linux GOARCH=${TARGETARCH} go build -trimpath -tags timetzdata -ldflags "-s -w -X main.Version=${VERSION}" \
      -o /out/dmfexport ./cmd/dmfexport
# The files of the empty base: CA certificates, the user, /tmp (package downloads), the state
# directory (a directory store, the working directory), the configuration's mount point.
RUN mkdir -p /rootfs/etc/ssl/certs /rootfs/etc/dmfexport /rootfs/tmp /rootfs/var/lib /state/dmfexport \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\ndmfexport:x:65532:65532:dmfexport:/var/lib/dmfexport:/sbin/nologin\n' >/rootfs/etc/passwd \
 && printf 'root:x:0:\ndmfexport:x:65532:\n' >/rootfs/etc/group \
 && chmod 1777 /rootfs/tmp \
 && chmod 0750 /state/dmfexport

FROM scratch
ARG VERSION=dev
ARG REVISION=
COPY --from=build /rootfs/ /
COPY --from=build --chown=65532:65532 /state/ /var/lib/
COPY --from=build /out/dmfexport /usr/local/bin/dmfexport
ENV PATH=/usr/local/bin
ENV DMFEXPORT_CONFIG=/etc/dmfexport/dmfexport.yaml
LABEL org.opencontainers.image.title="dmfexport" \
      org.opencontainers.image.description="Exports D365 F&O data packages on a schedule and publishes their rows to RabbitMQ" \
      org.opencontainers.image.source="https://github.com/dmfexport/dmfexport" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532
WORKDIR /var/lib/dmfexport
# run's /healthz, /readyz and /metrics (sink: 9311, with --listen :9311).
EXPOSE 9310/tcp
ENTRYPOINT ["/usr/local/bin/dmfexport"]
CMD ["run", "--listen", ":9310"]
