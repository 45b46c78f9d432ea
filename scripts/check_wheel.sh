#!/usr/bin/env bash
# Check the distributable wheel of napari-smlm-diffusion the way a user gets it:
#   1. build the sdist and from it the wheel into a temporary folder; twine check both;
#   2. check its file list: napari.yaml, the shipped weights with their model cards, nothing from
#      tests/, benchmarks/, runs/ or docs/, no checkpoints or temporary files;
#   3. create a fresh venv, install torch==2.13.0 first (the CPU wheel), then the built wheel;
#   4. from a temporary folder outside the repository run the `smlm-diffusion` command and
#      `npe2 validate` against the installed package (simulate -> localize -> evaluate).
# Prints the wheel size, a contents summary and the time of each step. Exits non-zero if anything
# is missing or fails; temporary folders are removed on exit.
#
# Usage: bash scripts/check_wheel.sh
# Environment: PYTHON (interpreter for the build and the venv, default python3),
#              TORCH_SPEC (default torch==2.13.0), KEEP_TMP=1 keeps the temporary folder,
#              CHECK_WHEEL_TMPDIR (where the temporary folder goes; default /dev/shm if it has
#              more than 4 GiB free, else TMPDIR or /tmp),
#              CHECK_WHEEL_MODELS (shipped models required in the wheel, default "kde_cnn kde_cnn_v1 denoiser").
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PACKAGE="napari_smlm_diffusion"
DIST_NAME="napari-smlm-diffusion"
# Shipped models that must be in the wheel.
read -r -a MODELS <<<"${CHECK_WHEEL_MODELS:-kde_cnn kde_cnn_v1 denoiser}"
REQUIRED=("$PACKAGE/napari.yaml")
for model in "${MODELS[@]}"; do
    REQUIRED+=("$PACKAGE/weights/$model.safetensors" "$PACKAGE/weights/$model.json")
done

# The venv (torch + napari) is ~1.5 GB in ~56,000 files: on a slow disk creating and deleting it
# takes minutes, on tmpfs seconds. Use /dev/shm when it has room, else TMPDIR.
pick_tmp() {
    if [ -n "${CHECK_WHEEL_TMPDIR:-}" ]; then
        echo "$CHECK_WHEEL_TMPDIR"
        return
    fi
    # (not if mounted noexec: the venv's scripts and torch's libraries must be executable there)
    if [ -d /dev/shm ] && [ -w /dev/shm ] \
        && ! awk '$2 == "/dev/shm" {print $4}' /proc/mounts 2>/dev/null | grep -q noexec; then
        local avail_kb
        avail_kb="$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')"
        if [ "${avail_kb:-0}" -gt $((4 * 1024 * 1024)) ]; then
            echo /dev/shm
            return
        fi
    fi
    echo "${TMPDIR:-/tmp}"
}
WORK="$(mktemp -d "$(pick_tmp)/check_wheel.XXXXXX")"
cleanup() {
    if [ "${KEEP_TMP:-0}" = "1" ]; then
        echo "check_wheel: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"  # pip's and the build's scratch files go there too
say() { echo "check_wheel: $*"; }
say "temporary folder $WORK"

FAILURES=()
fail() { FAILURES+=("$1"); echo "check_wheel: FAIL: $1" >&2; }
START=$SECONDS
STEP_START=$SECONDS
step() { STEP_START=$SECONDS; echo; say "== $* =="; }
done_step() { say "   ($((SECONDS - STEP_START)) s)"; }

# Run a command, keep its output in a log, show the tail on failure. Returns its exit code.
run_logged() {
    local name="$1"; shift
    local log="$WORK/logs/$name.log"
    mkdir -p "$WORK/logs"
    if "$@" >"$log" 2>&1; then
        return 0
    else
        local code=$?
        echo "---- last lines of $name ($*) ----" >&2
        tail -n 25 "$log" >&2
        echo "----" >&2
        return "$code"
    fi
}

# ---------------------------------------------------------------------------------------------
step "1. build the sdist and, from it, the wheel"
mkdir -p "$WORK/dist"
if "$PYTHON" -m build --version >/dev/null 2>&1; then
    BUILD=("$PYTHON" -m build --outdir "$WORK/dist" "$REPO")
else
    say "python -m build is not installed: building with pip wheel instead"
    BUILD=("$PYTHON" -m pip wheel --no-deps --wheel-dir "$WORK/dist" "$REPO")
fi
run_logged build "${BUILD[@]}" || { fail "building the wheel failed"; exit 1; }
shopt -s nullglob
WHEELS=("$WORK"/dist/*.whl)
shopt -u nullglob
[ "${#WHEELS[@]}" -eq 1 ] || { fail "expected one wheel, found ${#WHEELS[@]}"; exit 1; }
WHEEL="${WHEELS[0]}"
say "built $(basename "$WHEEL")"
if "$PYTHON" -m twine --version >/dev/null 2>&1; then
    run_logged twine "$PYTHON" -m twine check --strict "$WORK"/dist/* \
        || fail "twine check failed on the sdist or the wheel"
    say "twine check passed"
else
    say "twine is not installed: skipping twine check"
fi
done_step

# ---------------------------------------------------------------------------------------------
step "2. wheel contents"
CONTENT_ERRORS="$WORK/content_errors.txt"
"$PYTHON" - "$WHEEL" "$PACKAGE" "$CONTENT_ERRORS" "${REQUIRED[@]}" <<'PY'
import fnmatch
import sys
import zipfile
from pathlib import Path

wheel, package, errors_path, *required = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    infos = [i for i in archive.infolist() if not i.is_dir()]
names = [i.filename for i in infos]
errors = []

for name in required:
    if name not in names:
        errors.append(f"missing {name}")
missing_models = sorted({Path(n).stem for n in required
                         if n.startswith(f"{package}/weights/") and n not in names})
for model in missing_models:
    errors.append(
        f"the shipped weights '{model}' are not in the wheel: put {model}.safetensors and its "
        f"model card {model}.json into src/{package}/weights/ (train with smlm-diffusion "
        f"train-kde / train-diffusion RUN_DIR, then: python scripts/export_weights.py RUN_DIR "
        f"{model}) and build again"
    )
for name in names:
    if name.endswith(".safetensors") and name[: -len(".safetensors")] + ".json" not in names:
        errors.append(f"{name} has no model card (.json) next to it")

dist_info = next((n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")), None)
for name in names:
    top = name.split("/")[0]
    if top not in (package, dist_info):
        errors.append(f"unexpected top-level entry {name}")
    parts = name.split("/")
    if any(p in ("tests", "benchmarks", "runs", "docs", "__pycache__") for p in parts):
        errors.append(f"unexpected file {name}")
    if any(fnmatch.fnmatch(parts[-1], pat)
           for pat in ("*.ckpt", "*.tmp", "*.pyc", "checkpoint*", "*.egg-info")):
        errors.append(f"unexpected file {name}")

if dist_info is None:
    errors.append("no .dist-info folder")
else:
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    if "[napari.manifest]" not in entry_points or f"{package}:napari.yaml" not in entry_points:
        errors.append("entry point napari.manifest -> napari.yaml is missing")
    if "smlm-diffusion = " not in entry_points:
        errors.append("console script smlm-diffusion is missing")
    qt = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")
          and "extra ==" not in line
          and any(q in line.lower() for q in ("pyqt5", "pyqt6", "pyside2", "pyside6"))]
    if qt:
        errors.append(f"a Qt binding is a runtime dependency: {qt}")


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


groups: dict[str, list] = {}
for info in infos:
    name = info.filename
    if name.startswith(f"{dist_info}/"):
        key = "metadata (.dist-info)"
    elif name.endswith(".py"):
        key = "python modules"
    elif name.endswith(".safetensors"):
        key = "weights (.safetensors)"
    elif name.endswith(".json"):
        key = "model cards (.json)"
    else:
        key = "other package data"
    groups.setdefault(key, []).append(info)

print(f"wheel: {Path(wheel).name}")
print(f"size:  {human(Path(wheel).stat().st_size)} compressed, "
      f"{human(sum(i.file_size for i in infos))} unpacked, {len(infos)} files")
for key, items in groups.items():
    print(f"  {key:26s} {len(items):3d} files  {human(sum(i.file_size for i in items)):>10s}")
    if key != "python modules":
        for info in items:
            print(f"      {info.filename}  ({human(info.file_size)})")

Path(errors_path).write_text("".join(e + "\n" for e in errors))
PY
while IFS= read -r line; do
    [ -n "$line" ] && fail "wheel: $line"
done <"$CONTENT_ERRORS"
done_step

# ---------------------------------------------------------------------------------------------
step "3. fresh venv: $TORCH_SPEC first, then the wheel"
VENV="$WORK/venv"
"$PYTHON" -m venv "$VENV"
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# --no-compile: skip writing .pyc files for ~100 packages (CPU time); imports compile lazily
run_logged pip-torch "$VPY" -m pip install --no-compile "$TORCH_SPEC" \
    || { fail "pip install $TORCH_SPEC failed"; exit 1; }
run_logged pip-wheel "$VPY" -m pip install --no-compile "$WHEEL" \
    || { fail "pip install of the built wheel failed"; exit 1; }
run_logged pip-check "$VPY" -m pip check || fail "pip check reports broken requirements"
QT_FOUND="$("$VPY" -m pip list --format=freeze 2>/dev/null \
    | grep -i -E '^(pyqt5|pyqt6|pyside2|pyside6)==' || true)"
[ -z "$QT_FOUND" ] || fail "installing the wheel pulled a Qt binding: $QT_FOUND"
TORCH_VERSION="$("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" \
    || { TORCH_VERSION="?"; fail "torch does not import in the venv"; }
say "torch $TORCH_VERSION, $("$VPY" -m pip list 2>/dev/null | wc -l) packages in the venv"
done_step

# ---------------------------------------------------------------------------------------------
step "4. smoke test of the installed package (outside the repository)"
RUN="$WORK/run"
mkdir -p "$RUN"
cd "$RUN"
export PATH="$VENV/bin:$PATH"
unset PYTHONPATH
export PYTHONNOUSERSITE=1 QT_QPA_PLATFORM=offscreen

LOCATION="$("$VPY" -c "import $PACKAGE, os; print(os.path.dirname($PACKAGE.__file__))" 2>&1)" \
    || LOCATION="(import failed: $(echo "$LOCATION" | tail -n 1))"
case "$LOCATION" in
    "$VENV"/*) say "imports $PACKAGE from $LOCATION" ;;
    *) fail "$PACKAGE is imported from $LOCATION, not from the venv" ;;
esac

check() {  # check NAME COMMAND...: run, report, record a failure
    local name="$1"; shift
    local t0=$SECONDS
    if run_logged "$name" "$@"; then
        say "ok   $* ($((SECONDS - t0)) s)"
        return 0
    else
        fail "'$*' exited non-zero (log above)"
        return 1
    fi
}

check help smlm-diffusion --help || true
check npe2 npe2 validate "$DIST_NAME" || true
SIM_OK=0; LOC_OK=0
if check simulate smlm-diffusion simulate sim --frames 20 --size 48; then SIM_OK=1; fi
if [ "$SIM_OK" = 1 ]; then
    if check localize smlm-diffusion localize sim/stack.tif -o sim/locs.csv; then LOC_OK=1; fi
else
    fail "localize skipped: simulate failed"
fi
if [ "$LOC_OK" = 1 ]; then
    if check evaluate smlm-diffusion evaluate sim/truth.csv sim/locs.csv; then
        sed 's/^/      /' "$WORK/logs/evaluate.log"
    fi
else
    fail "evaluate skipped: localize failed (it needs the shipped weights)"
fi
cd "$REPO"
done_step

# ---------------------------------------------------------------------------------------------
echo
say "total $((SECONDS - START)) s"
if [ "${#FAILURES[@]}" -gt 0 ]; then
    say "FAILED (${#FAILURES[@]}):"
    for failure in "${FAILURES[@]}"; do echo "  - $failure" >&2; done
    exit 1
fi
say "PASSED: the wheel holds the manifest and the weights and works from a fresh venv"
