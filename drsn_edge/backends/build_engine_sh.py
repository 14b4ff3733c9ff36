"""Template of the portable build_engine.sh (see tensorrt.portable_build_script, which fills the @NAME@
fields). Bash with POSIX tools only: it runs on any JetPack (4.6 to 7) and picks the trtexec flags for
the TensorRT version it finds, like tensorrt.trtexec_command does on the host for a named profile."""

TEMPLATE = r"""#!/bin/bash
# Build the TensorRT engine for @ONNX@ on the Jetson this folder was copied to.
# Written by drsn-edge for any Jetson: the TensorRT version, the GPU (SM) and JetPack are detected here,
# when this runs, and the trtexec flags are chosen for that TensorRT version. An engine only runs on the
# TensorRT version and GPU it was built with; @SIDECAR@ records both.
#
#   ./build_engine.sh            build @ENGINE@ and @SIDECAR@ (exit 3: TensorRT or a tool is missing)
#   ./build_engine.sh --detect   print what was detected and the build command; build nothing
#
# DRSN_EDGE_ROOT (default: /) is the root prefix the machine's files are read under (a test seam).
set -eu
cd "$(dirname "$0")"

ONNX=@ONNX@
ENGINE=@ENGINE@
SIDECAR=@SIDECAR@
PRECISION=@PRECISION@
WORKSPACE_MB=@WORKSPACE_MB@
DLA_CORE=@DLA_CORE@
TIMING_CACHE=@TIMING_CACHE@
OPT_LEVEL=@OPT_LEVEL@
STRONGLY_TYPED=@STRONGLY_TYPED@
ROOT=${DRSN_EDGE_ROOT:-}
ROOT=${ROOT%/}

die() { code=$1; shift; echo "build_engine.sh: $*" >&2; exit "$code"; }
have() { command -v "$1" >/dev/null 2>&1; }
# 1:10.3.0.30-1+cuda12.5 -> 10.3.0.30 ; 6.2+b77 -> 6.2
clean_version() { sed -e 's/^[0-9]*://' -e 's/[-+~ ].*//' | grep -E '^[0-9]+(\.[0-9]+)*$' | head -n 1 || true; }
# a JSON string, or null when empty (detected values are sanitized to harmless characters)
json_str() {
  if [ -n "$1" ]; then printf '"%s"' "$(printf '%s' "$1" | tr -cd 'A-Za-z0-9 ._:+=()/,-')"; else printf 'null'; fi
}
dpkg_installed() {  # "package version" of the first installed package matching $1
  have dpkg-query || return 0
  dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' "$1" 2>/dev/null \
    | awk '$1 == "ii" { print $2, $3; exit }'
}
dpkg_version() { dpkg_installed "$1" | awk '{ print $2 }' | clean_version; }

detect_tensorrt() {
  TRT_VERSION=; TRT_FROM=; PY_TRT=
  if have python3; then
    PY_TRT=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null | tail -n 1 | clean_version)
  fi
  for pattern in tensorrt 'libnvinfer[0-9]*'; do
    found=$(dpkg_installed "$pattern")
    TRT_VERSION=$(printf '%s\n' "$found" | awk '{ print $2 }' | clean_version)
    if [ -n "$TRT_VERSION" ]; then TRT_FROM="dpkg ${found%% *}"; break; fi
  done
  if [ -z "$TRT_VERSION" ] && [ -n "$PY_TRT" ]; then TRT_VERSION=$PY_TRT; TRT_FROM="python3 tensorrt"; fi
  TRTEXEC=
  if [ -x "$ROOT/usr/src/tensorrt/bin/trtexec" ]; then TRTEXEC="$ROOT/usr/src/tensorrt/bin/trtexec"
  elif have trtexec; then TRTEXEC=$(command -v trtexec); fi
  if [ -z "$TRT_VERSION" ]; then
    if [ -n "$TRTEXEC" ]; then
      die 3 "found $TRTEXEC but no TensorRT package or Python bindings to tell its version; install them: sudo apt install nvidia-jetpack"
    fi
    die 3 "no TensorRT on this machine (no tensorrt/libnvinfer package, no trtexec, python3 cannot import tensorrt); install it: sudo apt install nvidia-jetpack"
  fi
  if [ -z "$TRTEXEC" ] && [ -z "$PY_TRT" ]; then
    die 3 "TensorRT $TRT_VERSION is installed but neither trtexec ($ROOT/usr/src/tensorrt/bin/trtexec) nor its Python bindings (python3 -c 'import tensorrt') are; install the bindings: sudo apt install python3-libnvinfer"
  fi
  TRT_MAJOR=${TRT_VERSION%%.*}
  case $TRT_VERSION in *.*) rest=${TRT_VERSION#*.}; TRT_MINOR=${rest%%.*} ;; *) TRT_MINOR=0 ;; esac
}

detect_sm() {
  SM=; SM_FROM=
  if [ -r "$ROOT/proc/device-tree/compatible" ]; then
    compatible=$(tr '\000' ' ' < "$ROOT/proc/device-tree/compatible")
    case $compatible in
@SOC_CASES@
    esac
    if [ -n "$SM" ]; then SM_FROM="device tree"; return 0; fi
  fi
  if have nvidia-smi; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .' || true)
    case $cap in [1-9][0-9]|[1-9][0-9][0-9]) SM=$cap; SM_FROM=nvidia-smi; return 0 ;; esac
  fi
  if [ -n "$PY_TRT" ]; then
    SM=$(python3 trt_builder.py info 2>/dev/null | sed -n 's/.*"sm": *"\([0-9]*\)".*/\1/p' | head -n 1 || true)
    if [ -n "$SM" ]; then SM_FROM="CUDA runtime"; fi
  fi
}

detect_jetpack() {
  L4T=; JETPACK=; JETPACK_FROM=; L4T_MAJOR=
  if [ -r "$ROOT/etc/nv_tegra_release" ]; then
    line=$(head -n 1 "$ROOT/etc/nv_tegra_release")
    L4T_MAJOR=$(printf '%s\n' "$line" | sed -n 's/^# *R\([0-9]*\) *(release), *REVISION: *\([0-9.]*\).*/\1/p')
    rev=$(printf '%s\n' "$line" | sed -n 's/^# *R\([0-9]*\) *(release), *REVISION: *\([0-9.]*\).*/\2/p')
    if [ -n "$L4T_MAJOR" ]; then L4T="$L4T_MAJOR.$rev"; fi
  fi
  JETPACK=$(dpkg_version nvidia-jetpack)
  if [ -n "$JETPACK" ]; then JETPACK_FROM="dpkg nvidia-jetpack"; return 0; fi
  case $L4T_MAJOR in
@L4T_CASES@
  esac
  if [ -n "$JETPACK" ]; then JETPACK_FROM="L4T R$L4T"; fi
}

version_at_least() {  # TensorRT >= $1.$2
  [ "$TRT_MAJOR" -gt "$1" ] || { [ "$TRT_MAJOR" -eq "$1" ] && [ "$TRT_MINOR" -ge "$2" ]; }
}

choose_command() {
  if [ -n "$TRTEXEC" ]; then
    BUILT_WITH=trtexec
    CMD=("$TRTEXEC" "--onnx=$ONNX" "--saveEngine=$ENGINE.partial")
    if [ "$STRONGLY_TYPED" = 1 ] || version_at_least 11 0; then CMD+=(--stronglyTyped)  # 11: no --int8/--fp16
    elif [ "$PRECISION" = int8 ]; then CMD+=(--int8 --fp16)
    elif [ "$PRECISION" = fp16 ]; then CMD+=(--fp16); fi
    if version_at_least 8 4; then CMD+=("--memPoolSize=workspace:${WORKSPACE_MB}M")
    else CMD+=("--workspace=$WORKSPACE_MB"); fi
    if [ -n "$DLA_CORE" ]; then CMD+=("--useDLACore=$DLA_CORE" --allowGPUFallback); fi
    if [ -n "$TIMING_CACHE" ]; then CMD+=("--timingCacheFile=$TIMING_CACHE"); fi
    if [ -n "$OPT_LEVEL" ] && version_at_least 8 6; then CMD+=("--builderOptimizationLevel=$OPT_LEVEL"); fi
  else  # the builder adapts to the TensorRT version its bindings report
    BUILT_WITH=trt_builder.py
    CMD=(python3 trt_builder.py build --onnx "$ONNX" --engine "$ENGINE.partial" --precision "$PRECISION"
         --workspace-mb "$WORKSPACE_MB")
    if [ -n "$DLA_CORE" ]; then CMD+=(--dla-core "$DLA_CORE"); fi
    if [ -n "$TIMING_CACHE" ]; then CMD+=(--timing-cache "$TIMING_CACHE"); fi
    if [ -n "$OPT_LEVEL" ]; then CMD+=(--opt-level "$OPT_LEVEL"); fi
    if [ "$STRONGLY_TYPED" = 1 ]; then CMD+=(--strongly-typed); fi
  fi
}

write_sidecar() {
  model=$(tr -d '\000' < "$ROOT/proc/device-tree/model" 2>/dev/null || true)
  {
    printf '{\n  "artifact": "%s",\n  "bytes": %s,\n' "$ENGINE" "$(wc -c < "$ENGINE" | tr -d ' ')"
    if have sha256sum; then printf '  "sha256": "%s",\n' "$(sha256sum "$ENGINE" | cut -d ' ' -f 1)"; fi
    printf '  "tensorrt": %s,\n  "sm": %s,\n  "jetpack": %s,\n  "l4t": %s,\n' "$(json_str "$TRT_VERSION")" \
      "$(json_str "$SM")" "$(json_str "$JETPACK")" "$(json_str "$L4T")"
    printf '  "board": %s,\n  "built_on": %s,\n  "built_with": "%s",\n  "command": %s,\n' "$(json_str "$model")" \
      "$(json_str "$(uname -n)")" "$BUILT_WITH" "$(json_str "${CMD[*]}")"
    printf '  "detected_from": {"tensorrt": %s, "sm": %s, "jetpack": %s},\n' "$(json_str "$TRT_FROM")" \
      "$(json_str "$SM_FROM")" "$(json_str "$JETPACK_FROM")"
    cat <<'STATIC_FIELDS'
@STATIC_JSON@
STATIC_FIELDS
  } > ".$SIDECAR.partial"
  mv -f ".$SIDECAR.partial" "$SIDECAR"
}

[ -f "$ONNX" ] || die 2 "$ONNX is not in $(pwd)"
detect_tensorrt
detect_sm
detect_jetpack
choose_command
if [ "${1:-}" = --detect ]; then
  printf 'tensorrt=%s (%s)\nsm=%s (%s)\njetpack=%s (%s)\nl4t=%s\ncommand=%s\n' "$TRT_VERSION" "$TRT_FROM" \
    "${SM:-unknown}" "${SM_FROM:-not found}" "${JETPACK:-unknown}" "${JETPACK_FROM:-not found}" "${L4T:-none}" "${CMD[*]}"
  exit 0
fi
echo "TensorRT $TRT_VERSION ($TRT_FROM), SM ${SM:-unknown}, JetPack ${JETPACK:-unknown}: ${CMD[*]}"
rm -f "$ENGINE.partial" ".$SIDECAR.partial"
trap 'rm -f "$ENGINE.partial" ".$SIDECAR.partial"' EXIT
"${CMD[@]}" || die 1 "$BUILT_WITH failed (exit $?); see its log above"
[ -s "$ENGINE.partial" ] || die 1 "$BUILT_WITH did not write $ENGINE"
mv -f "$ENGINE.partial" "$ENGINE"
write_sidecar
echo "built $ENGINE and $SIDECAR (TensorRT $TRT_VERSION, SM ${SM:-unknown}) with $BUILT_WITH"
"""
