#!/usr/bin/env bash
# Picasso's own HDF5 loader for tests/test_postprocess_picasso_loader.py (our .hdf5 read by
# picasso.io.load_locs, and Picasso's files read by us).
# picassosr 0.11.3 pins pandas<3 and pulls a GUI stack; its io module runs with our pandas 3, so
# it is installed without its dependencies, plus the three modules `picasso.io` imports
# (versions checked on Python 3.11 with numpy 2.4 and pandas 3.1). pip reports the unmet pins of
# picassosr as "dependency conflicts"; they do not concern picasso.io.
set -euo pipefail
python -m pip install --quiet --no-deps picassosr==0.11.3
python -m pip install --quiet nd2==0.12.0 numba==0.68.1 playsound3==3.3.2 2>&1 \
  | grep -v -i "dependency conflicts\|picassosr .* requires\|^$" || true
python -c "import picasso.io" > /dev/null
echo "picasso.io importable: the tests read our files with Picasso's own loader"
