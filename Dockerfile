# One image per Switchboard service, layered as `make images` builds them without a container
# engine (scripts/images/make_images.py): a shared Debian bookworm base with python3 and the user
# 10001, the fax service's Debian packages, and /app, a virtualenv holding the service.
#   docker build --target router -t switchboard/router:dev .
# Targets: router, case, chat, voice-gateway, email-ingest, fax. Keep the two recipes in step.

FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get -y dist-upgrade \
 && apt-get install -y --no-install-recommends python3 tzdata ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && echo 'switchboard:x:10001:10001:Switchboard:/:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'switchboard:x:10001:' >> /etc/group \
 && find / -xdev -perm -o+w ! -type l ! -path '/tmp' ! -path '/proc/*' ! -path '/sys/*' \
      ! -path '/dev/*' -exec chmod o-w {} +
ENV PATH=/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/ LANG=C.UTF-8
VOLUME /tmp
WORKDIR /

# The virtualenv is made with the base's own python, where it will run; nothing of this stage
# but /app reaches an image.
FROM base AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/app UV_PYTHON=/usr/bin/python3 UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
WORKDIR /src
COPY . .

FROM build AS app-router
RUN uv sync --locked --no-dev --no-editable --package switchboard-router
FROM build AS app-case
RUN uv sync --locked --no-dev --no-editable --package switchboard-case
FROM build AS app-chat
RUN uv sync --locked --no-dev --no-editable --package switchboard-chat
FROM build AS app-voice-gateway
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*
RUN uv sync --locked --no-dev --no-editable --package switchboard-voice-gateway \
 && /app/bin/python -c "from pathlib import Path; \
from switchboard.voice_gateway.media.prompts import Prompts; \
Prompts(Path('/var/lib/switchboard/prompts')).load()"
FROM build AS app-email-ingest
RUN uv sync --locked --no-dev --no-editable --package switchboard-email-ingest
FROM build AS app-fax
RUN uv sync --locked --no-dev --no-editable --package switchboard-fax

# Ports and volumes as each Deployment (StatefulSet for voice-gateway) in deploy/k8s/base
# declares them.
FROM base AS router
COPY --from=app-router /app /app
EXPOSE 9464 8086 50051
USER 10001:10001
ENTRYPOINT ["/app/bin/switchboard-router"]

FROM base AS case
COPY --from=app-case /app /app
EXPOSE 9464 8086 50052
USER 10001:10001
ENTRYPOINT ["/app/bin/switchboard-case"]

FROM base AS chat
COPY --from=app-chat /app /app
EXPOSE 9464 8086 50053 8080
USER 10001:10001
ENTRYPOINT ["/app/bin/switchboard-chat"]

FROM base AS voice-gateway
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*
COPY --from=app-voice-gateway /app /app
# The synthesised prompts' cache; an emptyDir over the folder makes the gateway synthesise them
# again at start.
COPY --from=app-voice-gateway /var/lib/switchboard/prompts /var/lib/switchboard/prompts
RUN chown -R 10001:10001 /var/lib/switchboard/prompts \
 && install -d -o 10001 -g 10001 /var/spool/switchboard/recordings
ENV VOICE_PROMPTS_DIR=/var/lib/switchboard/prompts
# Calls being recorded grow here until they end and are sealed into the object store.
ENV VOICE_RECORDINGS_DIR=/var/spool/switchboard/recordings
EXPOSE 9464 8086 50054 5060/udp 5060/tcp 5061/tcp
VOLUME /var/lib/switchboard/prompts
VOLUME /var/spool/switchboard/recordings
USER 10001:10001
ENTRYPOINT ["/app/bin/switchboard-voice-gateway"]

FROM base AS email-ingest
COPY --from=app-email-ingest /app /app
EXPOSE 9464 8086 50055 2525
USER 10001:10001
ENTRYPOINT ["/app/bin/switchboard-email-ingest"]

FROM base AS fax
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor \
      tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-jpn fonts-noto-cjk \
 && rm -rf /var/lib/apt/lists/*
COPY --from=app-fax /app /app
EXPOSE 9464 8086 50056 8095
USER 10001:10001
ENTRYPOINT ["/app/bin/switchboard-fax"]
