# One image recipe for every Switchboard service:
#   docker build --build-arg SERVICE=router -t switchboard/router .
# SERVICE is a folder under services/ (router, case, chat, voice-gateway, email-ingest, fax).
FROM python:3.11-slim AS build
ARG SERVICE
RUN pip install --no-cache-dir uv
# The venv's scripts name their interpreter by absolute path: build it where it will run.
ENV UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY . .
RUN test -n "$SERVICE" && test -d "services/$SERVICE" \
 && uv sync --locked --no-dev --no-editable --package "switchboard-$SERVICE"

FROM python:3.11-slim
ARG SERVICE
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 SERVICE=${SERVICE}
COPY --from=build /app/.venv /app/.venv
RUN useradd --system --uid 10001 switchboard
USER 10001
# exec form through sh so the service's console script is PID 1 and receives SIGTERM.
ENTRYPOINT ["/bin/sh", "-c", "exec switchboard-$SERVICE \"$@\"", "--"]
