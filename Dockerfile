# rnn-sentiment serving image: FastAPI + a model store holding the shipped default checkpoint,
# CPU-only PyTorch.
#
#   docker build -t rnn-sentiment .
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp rnn-sentiment
#
# Stages: `requirements` turns pyproject.toml into a requirements list, `build` installs the
# dependencies into a virtualenv (and has the toolchain), `project` builds the project's wheel,
# `runtime` is the slim image that ships: the virtualenv, the model store (/models) and the
# wheel, run as a non-root user.
# docs/deployment.md documents the build arguments and settings.

# The runtime dependencies alone, so that editing anything else in pyproject.toml (dev tools,
# tool settings) leaves the expensive dependency layer below cached.
FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" > /requirements.txt


FROM python:3.11-slim AS build
# A C compiler for any dependency that has no wheel for the target platform; it never reaches
# the runtime image. Package versions follow the base image's Debian release (see .hadolint.yaml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_FIND_LINKS=/wheels
# A mirror of PyPI, if the build machine must use one.
ARG PIP_INDEX_URL
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# PyTorch first and always the CPU build: plain PyPI would bring a multi-GB CUDA build on Linux.
# A wheel in the build context's wheels/ folder (empty in git) wins, which allows a build with
# no access to the PyTorch index; otherwise TORCH_INDEX_URL supplies it (empty: do not use it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY wheels/ /wheels/
# hadolint reads "$@" (the optional index option) as an unpinned package: torch is pinned.
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then set -- --extra-index-url "$TORCH_INDEX_URL"; fi \
    && pip install "$@" "torch==${TORCH_VERSION}+cpu"

# The other runtime dependencies; `torch==X` in pyproject.toml is satisfied by `X+cpu` above.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt \
    && python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__"
# The torch wheel carries C++ headers and test programs that nothing runs here (~160 MB).
RUN torch_dir="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
    && rm -rf "$torch_dir/include" "$torch_dir/test" \
    && rm -f "$torch_dir"/bin/test_* "$torch_dir"/bin/*Test "$torch_dir"/bin/protoc*


# The project itself, as a wheel (app + training's model and checkpoint code, no data), in a
# stage of its own so that the virtualenv the runtime copies never changes with the code.
FROM build AS project
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY training/ training/
COPY rnn_sentiment/ rnn_sentiment/
RUN pip wheel --no-deps --wheel-dir /dist .

# The model store: one folder per model, named as clients name it. The image bakes the shipped
# checkpoint as `default`; a store mounted over /models replaces it (docs/models.md). World-
# readable whatever modes its files had in the build context (the classic builder has no COPY
# --chmod); it stays owned by root, so the service cannot alter it.
COPY model_store/default/ /models/default/
RUN chmod -R u=rwX,go=rX /models


FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="rnn-sentiment" \
      org.opencontainers.image.description="Sentiment analysis with a recurrent neural network, served over HTTP" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app

# HOME=/tmp: any library that wants a cache directory writes to the tmpfs, so the root
# filesystem can stay read-only. Byte-code is compiled at install time, never at run time.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=1 \
    APP_MODEL_STORE=/models

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=project /models/ /models/
COPY --from=project /dist/ /tmp/dist/
RUN pip install --no-deps --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        /tmp/dist/*.whl \
    && rm -rf /tmp/dist

USER 10001:10001
EXPOSE 8000
# /readyz answers 200 only once the model is loaded; slim has no curl, Python has urllib.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=2)"]
# The production command of `make serve`; HOST, PORT and WORKERS come from the environment.
CMD ["python", "-m", "app"]
