# syntax=docker/dockerfile:1
# Build: docker build -t tusgate .
# Run:   docker run -p 8080:8080 -v tusgate-data:/data tusgate
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tusgate ./cmd/tusgate \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tusgate /usr/local/bin/tusgate
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# GODEBUG=adaptivestackstart=0: goroutines start with the runtime's smallest
# stack, not the average in use at the last GC. With many slow uploads open
# that average is raised by the connections' deep handler stacks, and every
# small per-request goroutine started larger: about 14 KiB more memory per
# open upload (README, Benchmarks). cmd/tusgate-bench runs tusgate with the
# same setting and its tests check the two agree.
ENV TUSGATE_DATA_DIR=/data \
    TUSGATE_LISTEN=:8080 \
    GODEBUG=adaptivestackstart=0
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/tusgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tusgate"]
