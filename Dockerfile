# The operator and router image (one image, two commands: `quantrollout run`, `quantrollout router`).
#
#   docker build -t ghcr.io/quantrollout/quantrollout:$(python -c 'import sys; sys.path.insert(0, "operator"); import quantrollout; print(quantrollout.__version__)') .
#
# Without a container engine, `make image` (hack/dist.py) builds the same image as an OCI layout:
# Debian bookworm's python3 with the wheel in /opt/quantrollout, run as uid 65532; `make test`
# checks that build (tests/integration/test_package.py), and that this file says the same.

FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY operator ./operator
COPY hack/constraints.txt ./constraints.txt
RUN pip install --no-cache-dir build==1.6.1 \
 && python -m build --wheel --outdir /wheels . \
 && pip download --no-cache-dir --only-binary=:all: -c constraints.txt -d /wheels /wheels/quantrollout-*.whl

FROM python:3.11-slim-bookworm
RUN python3 -m venv /opt/quantrollout
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    /opt/quantrollout/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/quantrollout-*.whl
ENV PATH=/opt/quantrollout/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/opt/quantrollout/bin/quantrollout"]
