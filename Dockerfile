# The project image every cluster node runs (cluster.yaml, cluster-gcp.yaml, k8s/): Ray 2.60,
# Python 3.11, CUDA, and rmaunet with its GPU and cloud extras, so nodes install nothing at boot.
#   docker build -t ghcr.io/your-org/rmaunet:0.1.0 . && docker push ghcr.io/your-org/rmaunet:0.1.0
# The requirements come from pyproject.toml alone (its extras): there is no second list here.
FROM rayproject/ray:2.60.0-py311-gpu

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes, not
# on every code change. An empty package stands in for the code while they install. (COPY
# --chown creates the folder owned by `ray`, the image's user; WORKDIR would make it root's.)
COPY --chown=ray:users pyproject.toml README.md LICENSE /home/ray/rmaunet-build/
WORKDIR /home/ray/rmaunet-build
RUN mkdir rmaunet && touch rmaunet/__init__.py \
    && pip install --no-cache-dir ".[gpu,aws,gcp,postgres]" \
    && pip uninstall --yes rmaunet

# The package itself (its study specs included); the dependencies are already in place.
# /home/ray/search_spaces points at the installed specs, for entry points such as
# `python -m rmaunet study run /home/ray/search_spaces/demo.yaml …` (k8s/rayjob.yaml).
COPY --chown=ray:users rmaunet ./rmaunet
RUN pip install --no-cache-dir --no-deps . \
    && cd /home/ray && rm -rf /home/ray/rmaunet-build \
    && ln -s "$(python -c 'from rmaunet.specs import bundled_spec_folder; print(bundled_spec_folder())')" \
        /home/ray/search_spaces \
    && test -f /home/ray/search_spaces/demo.yaml

WORKDIR /home/ray
