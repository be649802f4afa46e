# The consumer image: `imgpipe consumer` on the official slim Python, as a non-root user.
# BASE may be any Debian-like image whose interpreter is `python3`; `make image` builds a local
# stand-in (Debian bookworm + its python3) because this machine cannot pull from Docker Hub.
ARG BASE=docker.io/library/python:3.12-slim-bookworm

FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md consumer-constraints.txt ./
COPY src ./src
# Every package is pinned (consumer-constraints.txt) and ships a binary wheel (libvips comes in
# pyvips-binary), so no compiler is needed.
RUN /opt/venv/bin/pip install --no-cache-dir --no-compile -c consumer-constraints.txt . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools
# The consumer calls only S3 and SQS (STS and SSO serve the credential providers); the other
# ~440 botocore service models are 27 MB nobody loads. Add a service to the list when the code
# starts calling one, or its client fails with UnknownServiceError.
ARG BOTOCORE_SERVICES="s3 sqs sts sso sso-oidc"
RUN set -eu; \
    for dir in /opt/venv/lib/python3*/site-packages/botocore/data/*/; do \
        case " ${BOTOCORE_SERVICES} " in *" $(basename "${dir}") "*) ;; *) rm -rf "${dir}" ;; esac; \
    done; \
    /opt/venv/bin/python -c 'import sys, boto3; \
        [boto3.client(name, region_name="us-east-1") for name in sys.argv[1:]]' ${BOTOCORE_SERVICES}; \
    /opt/venv/bin/python -c 'import imgpipe.consumer, pyvips; print("libvips", pyvips.version(0))'; \
    find /opt/venv -depth -name __pycache__ -exec rm -rf {} +

FROM ${BASE}
LABEL org.opencontainers.image.title="imgpipe-consumer" \
      org.opencontainers.image.description="SQS -> thumbnail -> S3 consumer of the imgpipe pipeline"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTH_PORT=8080
RUN groupadd --system --gid 10001 imgpipe \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin imgpipe
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
# For `docker run`; Kubernetes uses the Deployment's probes instead. No curl in slim images.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["imgpipe", "consumer"]
