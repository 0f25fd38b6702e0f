# Sourced by the GPU scripts: make the package importable on a machine that has torch and lightning
# but not this project installed. Pure-Python packages it lacks (hydra-core, omegaconf, antlr4) may
# come as wheels in .whl/ (see the project notes on the lent GPU machine).
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
